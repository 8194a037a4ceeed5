# expect: E0204 3:1
# `use` of a URL is refused
use "https://example.com/evil.dsl"
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

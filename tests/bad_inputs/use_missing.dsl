# expect: E0702 3:1
# `use` of a file that is not there
use "no_such_file.dsl"
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

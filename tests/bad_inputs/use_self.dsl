# expect: E0205 3:1
# a file that imports itself
use "use_self.dsl"
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

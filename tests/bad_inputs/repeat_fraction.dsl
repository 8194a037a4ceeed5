# expect: E0207 6:12
# a repeat count that is not an integer
model M {
    input x: [B, 8]
    y = x
    repeat 2.5 {
        y = relu(y)
    }
    output y
}

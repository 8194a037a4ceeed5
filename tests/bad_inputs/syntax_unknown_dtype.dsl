# expect: E0101 4:21
# a dtype that does not exist
model M {
    input x: [B, 8] double
    y = relu(x)
    output y
}

# expect: E0101 5:6
# a name with a non-ASCII letter
model M {
    input x: [B, 8]
    yé = relu(x)
    output y
}

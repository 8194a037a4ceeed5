# expect: E0101 8:1
# two models in one file
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}
model N {
    input x: [B]
    output x
}

# expect: E0203 5:5
# an input declared twice
model M {
    input x: [B, 8]
    input x: [B, 8]
    y = relu(x)
    output y
}

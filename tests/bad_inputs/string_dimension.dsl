# expect: E0305 5:18
# a string param used as a dimension
param s = "wide"
model M {
    input x: [B, s]
    y = relu(x)
    output y
}

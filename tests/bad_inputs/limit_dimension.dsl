# expect: E0801 4:5
# a dimension over 2**31 - 1
model M {
    input x: [3000000000, 8]
    y = relu(x)
    output y
}

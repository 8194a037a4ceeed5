# expect: E0101 3:11
# a string without its closing quote
param s = "abc
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

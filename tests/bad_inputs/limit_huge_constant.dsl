# expect: E0801 3:11
# a constant over 2**62
param a = 2 ** 62 * 4
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

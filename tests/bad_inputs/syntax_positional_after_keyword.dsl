# expect: E0101 5:37
# a tensor argument after a keyword
model M {
    input x: [B, 8]
    y = MultiheadAttention(heads=2, x)
    output y
}

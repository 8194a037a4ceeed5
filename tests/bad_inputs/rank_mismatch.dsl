# expect: E0303 5:28
# attention over a rank-2 tensor
model M {
    input x: [B, 8]
    y = MultiheadAttention(x, heads=2)
    output y
}

# expect: E0302 5:19
# Embedding of float features
model M {
    input x: [B, 8]
    y = Embedding(x, num=10, dim=4)
    output y
}

# expect: E0502 9:12
# an unknown data source
model M {
    input x: [B, 8]
    y = Linear(x, out=3)
    output y
}
train {
    data = imagenet()
    loss = cross_entropy(y, y)
}

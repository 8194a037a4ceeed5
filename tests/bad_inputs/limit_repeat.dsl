# expect: E0801 6:12
# repeat over the limit of 10,000 copies
model M {
    input x: [B, 8]
    y = x
    repeat 100000 {
        y = relu(y)
    }
    output y
}

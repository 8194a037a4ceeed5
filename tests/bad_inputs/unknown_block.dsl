# expect: E0201 5:9
# a misspelt block
model M {
    input x: [B, 8]
    y = Linaer(x, out=4)
    output y
}

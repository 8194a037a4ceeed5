# expect: E0202 5:19
# too many tensor arguments
model M {
    input x: [B, 8]
    y = Linear(x, x, out=4)
    output y
}

# expect: E0401 5:23
# a string where an int goes
model M {
    input x: [B, 8]
    y = Linear(x, out="big")
    output y
}

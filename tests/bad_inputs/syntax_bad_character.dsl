# expect: E0101 5:11
# a character that is no token
model M {
    input x: [B, 8]
    y = x $ x
    output y
}

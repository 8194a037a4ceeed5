# expect: E0205 5:9
# a block that calls itself
block A() {
    input x: [B, 8]
    y = A(x)
    output y
}
model M {
    input x: [B, 8]
    y = A(x)
    output y
}

# expect: E0203 7:7
# a block defined twice
block A() {
    input x: [B]
    output x
}
block A() {
    input x: [B]
    output x
}
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

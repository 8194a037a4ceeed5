# expect: E0101 5:15
# Python code where a name goes
model M {
    input x: [B, 8]
    __import__('os').system('true') = relu(x)
    output y
}

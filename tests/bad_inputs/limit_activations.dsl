# expect: E0802 5:9
# activations of one forward pass over 256 GiB
model M {
    input x: [1000000, 8]
    h = Linear(x, out=100000)
    y = relu(h)
    output y
}

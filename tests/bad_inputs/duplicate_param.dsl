# expect: E0203 4:1
# a param defined twice
param a = 1
param a = 2
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}

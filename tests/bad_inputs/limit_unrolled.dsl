# expect: E0801 6:12
# nested repeats that unroll past 200,000 statements, refused before unrolling
model M {
    input x: [B, 8]
    y = x
    repeat 10000 {
        repeat 100 {
            y = relu(y)
        }
    }
    output y
}

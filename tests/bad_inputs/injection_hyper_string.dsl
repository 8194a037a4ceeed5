# expect: E0401 5:37
# Python code in a string hyperparameter stays a string and is refused
model M {
    input x: [B, 8]
    y = MLP(x, hidden=4, out=4, act="relu'); __import__('os').system('true'); ('")
    output y
}

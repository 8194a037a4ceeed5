# Bai, Kolter & Koltun 2018, "An Empirical Evaluation of Generic Convolutional and
# Recurrent Networks for Sequence Modeling" (the temporal convolutional network, after
# WaveNet's dilated causal convolutions): a character language model whose residual
# blocks hold two dilated causal Conv1d layers. Causality: pad (kernel-1)*dilation on both
# sides, keep the first T outputs (the paper's "chomp"), so step t sees steps <= t only.
param d = 64
param kernel = 3
param context = 64

block CausalConv(d: int, kernel: int, dilation: int) {
    input x: [B, d, T]
    c = Conv1d(x, out=d, kernel=kernel, dilation=dilation, padding=(kernel - 1) * dilation)
    y = relu(c[..., :T])                                   # chomp the look-ahead
    output y
}

block TemporalBlock(d: int, kernel: int, dilation: int) {
    input x: [B, d, T]
    h = CausalConv(x, d=d, kernel=kernel, dilation=dilation)
    h = CausalConv(h, d=d, kernel=kernel, dilation=dilation)
    y = relu(x + h)
    output y
}

model TCNCharLM(vocab: int = 96, levels: int = 3) {
    input tokens: [B, T] long
    e = permute(Embedding(tokens, num=vocab, dim=d), [0, 2, 1])     # [B, d, T]: channels first
    repeat levels as i { e = TemporalBlock(e, d=d, kernel=kernel, dilation=2 ** i) }
    logits = Linear(permute(e, [0, 2, 1]), out=vocab)               # [B, T, vocab]
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=context, batch=16, chars=50000)
    loss      = cross_entropy(logits, next)
    metrics   = [accuracy(logits, next)]
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}

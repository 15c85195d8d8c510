#!/usr/bin/python3
"""Reference for data/epoch_order.cpp: the epoch order (Philox4x32-10 + Fisher-Yates) written
independently in Python. Prints the golden orders pasted into tests/data/order_test.cpp
(EpochOrder.MatchesThePythonReference). Run: /usr/bin/python3 tools/epoch_order_reference.py"""

M32 = 0xFFFFFFFF
STREAM_BLOCKS, STREAM_WINDOW = 0x0D1A0001, 0x0D1A0002


def philox4x32_10(ctr, key):
    # Random123's philox4x32 round function and Weyl key schedule (Salmon et al., SC'11).
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def keyed_below(seed, stream, a, b, c, bound):
    out = philox4x32_10((a & M32, ((a >> 32) ^ b) & M32, c & M32, stream), (seed & M32, seed >> 32))
    r = (out[0] << 32) | out[1]
    return (r * bound) >> 64  # Lemire's multiply-shift


def fisher_yates(a, draw):
    for j in range(len(a) - 1, 0, -1):
        k = draw(j, j + 1)
        a[j], a[k] = a[k], a[j]


def epoch_order(n, seed, epoch, block=1, window_blocks=8):
    if block == 1:
        order = list(range(n))
        fisher_yates(order, lambda j, m: keyed_below(seed, STREAM_BLOCKS, j, 0, epoch, m))
        return order
    blocks = (n + block - 1) // block
    perm = list(range(blocks))
    fisher_yates(perm, lambda j, m: keyed_below(seed, STREAM_BLOCKS, j, 0, epoch, m))
    order = []
    for w in range(0, (blocks + window_blocks - 1) // window_blocks):
        win = [i for b in perm[w * window_blocks:(w + 1) * window_blocks]
               for i in range(b * block, min(n, (b + 1) * block))]
        fisher_yates(win, lambda j, m, w=w: keyed_below(seed, STREAM_WINDOW, j, w, epoch, m))
        order += win
    return order


if __name__ == "__main__":
    print("epoch_order(10, 1, 0) =", epoch_order(10, 1, 0))
    print("epoch_order(12, 2**40 + 7, 3) =", epoch_order(12, 2**40 + 7, 3))
    print("epoch_order(20, 9, 1, block=4, window_blocks=2) =", epoch_order(20, 9, 1, 4, 2))

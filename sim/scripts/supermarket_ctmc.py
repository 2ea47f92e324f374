#!/usr/bin/env python3
"""An independent check of reproduction 1, apart from switchyard-sim: the
supermarket model with two choices as a continuous-time Markov chain,
uniformized (each step an arrival with probability λ/(λ+1), else a service
completion at a uniformly drawn server), mean time in system by Little's law.

    python3 sim/scripts/supermarket_ctmc.py LAMBDA STEPS SEED [N]

Two distinct servers are drawn, the call joins the shorter (ties: the first
drawn), as the least-request plugin does. The first tenth of the steps is
warm-up. With λ = 0.99: N = 100, 3e7 steps, seed 1 gives 5.96; N = 1000,
6e7 steps, seed 2 gives 5.50 (the n → ∞ limit is 5.43).
"""
import random
import sys

lam = float(sys.argv[1])
steps = int(float(sys.argv[2]))
random.seed(int(sys.argv[3]))
n = int(sys.argv[4]) if len(sys.argv) > 4 else 100
q = [0] * n
total = 0
area = 0
counted = 0
p_arrival = lam / (lam + 1)
warm = steps // 10
r = random.random
ri = random.randrange
for k in range(steps):
    if r() < p_arrival:
        i = ri(n)
        j = ri(n - 1)
        if j >= i:
            j += 1
        if q[j] < q[i]:
            i = j
        q[i] += 1
        total += 1
    else:
        i = ri(n)
        if q[i] > 0:
            q[i] -= 1
            total -= 1
    if k >= warm:
        area += total
        counted += 1
print(lam, n, area / counted / (lam * n))

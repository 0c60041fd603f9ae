import sys, json
# Decodes the last line of a proto-watch.sh output: per slot, per-CPU u64s (hex bytes, little endian) summed.
names = ["closes","failed","connects","listens","bytes_sent","bytes_received","fin_queued","fin_read","fin_received","late_bytes"]
line = open(sys.argv[1]).read().strip().splitlines()[-1]
ts, rest = line.split(" ", 1)
dec = json.JSONDecoder(); i = 0; vals = []
while i < len(rest):
    if rest[i] == " ": i += 1; continue
    arr, j = dec.raw_decode(rest, i); i = j
    b = bytes(int(x, 16) for x in arr)
    vals.append(sum(int.from_bytes(b[k:k+8], "little") for k in range(0, len(b), 8)))
for n, v in zip(names, vals): print(f"{n:15s} {v}")

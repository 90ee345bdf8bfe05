#!/usr/bin/env python3
"""Writes the image folders behind the scale rows of docs/quality.md, with nothing but the standard library:

  test/    the first N images of the Fashion-MNIST test split, as 28x28 grey PNGs (the "test split's own images" row)
  noise-S/ N images of Gaussian noise: pixel = clip(127.5 + 127.5 * S * z), z ~ N(0, 1), seeded (the "noise" rows)

usage: make-score-folders.py OUT_DIR [N] [--data /usr/share/datasets/fashion-mnist] [--sigma 1.0 ...]
"""
import argparse, gzip, os, random, struct, zlib

def png_grey(path, w, h, pixels):
    raw = b"".join(b"\x00" + bytes(pixels[y * w:(y + 1) * w]) for y in range(h))
    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

def main():
    p = argparse.ArgumentParser()
    p.add_argument("out"); p.add_argument("n", nargs="?", type=int, default=2000)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--sigma", type=float, nargs="*", default=[1.0])
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    with gzip.open(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")) as f:
        magic, count, h, w = struct.unpack(">IIII", f.read(16))
        assert magic == 2051 and count >= a.n, "not an IDX image file with enough images"
        data = f.read(a.n * h * w)
    os.makedirs(os.path.join(a.out, "test"), exist_ok=True)
    for i in range(a.n):
        png_grey(os.path.join(a.out, "test", f"{i:05d}.png"), w, h, data[i * h * w:(i + 1) * h * w])
    rng = random.Random(a.seed)
    for s in a.sigma:
        d = os.path.join(a.out, f"noise-{s:g}")
        os.makedirs(d, exist_ok=True)
        for i in range(a.n):
            px = [min(255, max(0, round(127.5 + 127.5 * s * rng.gauss(0, 1)))) for _ in range(h * w)]
            png_grey(os.path.join(d, f"{i:05d}.png"), w, h, px)

main()

/**
 * Non-negative least squares for a handful of directions: min |y - sum_i a_i d_i|^2 with a >= 0.
 * Solved on the Gram matrix (M x M, M = the directions, a few dozen at most) by cyclic coordinate
 * descent, each step exact for its coordinate; the problem is convex, so this converges to the
 * optimum. Lawson-Hanson would be faster on big M; ours is tiny.
 */
export interface NnlsResult {
  weights: number[];
  /** 1 - |residual|^2 / |y|^2: the fraction of y's squared norm the fit explains. */
  explained: number;
  residualNorm: number;
}

/** `dirs` M rows of length H (flat), `y` length H. */
export function nnls(dirs: Float32Array, y: Float32Array, maxSweeps = 20000, tol = 1e-12): NnlsResult {
  const H = y.length;
  const M = dirs.length / H;
  const G = new Float64Array(M * M);
  const b = new Float64Array(M);
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < H; k++) b[i]! += dirs[i * H + k]! * y[k]!;
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let k = 0; k < H; k++) s += dirs[i * H + k]! * dirs[j * H + k]!;
      G[i * M + j] = s;
      G[j * M + i] = s;
    }
  }
  let yy = 0;
  for (const v of y) yy += v * v;
  const a = new Float64Array(M);
  // grad = G a - b, kept up to date as coordinates move.
  const grad = Float64Array.from(b, (v) => -v);
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let moved = 0;
    for (let i = 0; i < M; i++) {
      const gii = G[i * M + i]!;
      if (gii <= 0) continue;
      const next = Math.max(0, a[i]! - grad[i]! / gii);
      const d = next - a[i]!;
      if (d === 0) continue;
      a[i] = next;
      for (let j = 0; j < M; j++) grad[j]! += G[j * M + i]! * d;
      moved = Math.max(moved, d * d * gii);
    }
    if (moved <= tol * yy) break;
  }
  // |y - A a|^2 = yy - 2 a.b + a.G a
  let ab = 0;
  let aGa = 0;
  for (let i = 0; i < M; i++) {
    ab += a[i]! * b[i]!;
    for (let j = 0; j < M; j++) aGa += a[i]! * G[i * M + j]! * a[j]!;
  }
  const rr = Math.max(0, yy - 2 * ab + aGa);
  return { weights: Array.from(a), explained: yy > 0 ? 1 - rr / yy : 0, residualNorm: Math.sqrt(rr) };
}

// Static triangular tile schedule of the overlap kernel, shared by host and device code.
//
// The Gram matrix C = X X^T is cut into 128 x 128 tiles (bi, bj); only bj >= bi is computed.
// Tiles are numbered so that concurrently running blocks share operands in L2: tile rows are
// grouped in bands of `group` rows; inside a band the order is column by column, rows inner,
// so consecutive tile numbers reuse the same B column tile and the band's few A row tiles.
//
// Band b (rows r0 = b*group .. r0+h-1, h = min(group, T - r0)) holds, in this order,
//   the triangle: columns r0..r0+h-1, column r0+c having rows r0..r0+c  (h(h+1)/2 tiles)
//   the rectangle: columns r0+h..T-1, each with all h rows                (h(T-r0-h) tiles)
// Every band before the last is full (h == group), so the first tile of band b is
//   S(b) = b*g*T - g*g*b*(b-1)/2 - b*g*(g-1)/2, a quadratic in b inverted with one sqrt
// and an exact integer fix-up. All arithmetic is int64 (T^2 exceeds 2^31 for real heads).
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SK_HD __host__ __device__ __forceinline__
#else
#define SK_HD inline
#endif

namespace sk::cuda {

SK_HD int64_t num_tiles(int64_t T) { return T * (T + 1) / 2; }

SK_HD int64_t band_start(int64_t b, int64_t T, int64_t g) {
  return b * g * T - g * g * (b * (b - 1) / 2) - b * (g * (g - 1) / 2);
}

// Tile t in [0, num_tiles(T)) -> (bi, bj), bi <= bj < T.
SK_HD void tile_coords(int64_t t, int64_t T, int64_t g, int64_t* bi, int64_t* bj) {
  const int64_t nb = (T + g - 1) / g;
  // S(b) = -g^2/2 b^2 + g (T + 1/2) b  =>  b = ((T + 1/2) - sqrt((T + 1/2)^2 - 2 t)) / g
  const double tp = static_cast<double>(T) + 0.5;
  double disc = tp * tp - 2.0 * static_cast<double>(t);
  disc = disc > 0.0 ? disc : 0.0;
  int64_t b = static_cast<int64_t>((tp - sqrt(disc)) / static_cast<double>(g));
  b = b < 0 ? 0 : (b > nb - 1 ? nb - 1 : b);
  while (b + 1 <= nb - 1 && band_start(b + 1, T, g) <= t) ++b;
  while (b > 0 && band_start(b, T, g) > t) --b;
  const int64_t r0 = b * g;
  const int64_t h = (T - r0) < g ? (T - r0) : g;
  const int64_t u = t - band_start(b, T, g);
  const int64_t tri = h * (h + 1) / 2;
  if (u < tri) {
    int64_t c = 0;
    while ((c + 1) * (c + 2) / 2 <= u) ++c;  // c < h <= group: a handful of steps
    *bj = r0 + c;
    *bi = r0 + (u - c * (c + 1) / 2);
  } else {
    const int64_t v = u - tri;
    *bj = r0 + h + v / h;
    *bi = r0 + v % h;
  }
}

// Split mode (cross pairs of two row parts): tiles (bi, bj) with bi < ta <= bj < T, in bands
// of g tile rows, column by column inside a band (rows inner), like the rectangle part of a
// triangular band. Every band before the last has g * (T - ta) tiles.
SK_HD void rect_tile_coords(int64_t t, int64_t ta, int64_t T, int64_t g, int64_t* bi,
                            int64_t* bj) {
  const int64_t full = g * (T - ta);
  const int64_t b = t / full;
  const int64_t r0 = b * g;
  const int64_t h = (ta - r0) < g ? (ta - r0) : g;
  const int64_t u = t - b * full;
  *bi = r0 + u % h;
  *bj = ta + u / h;
}

}  // namespace sk::cuda

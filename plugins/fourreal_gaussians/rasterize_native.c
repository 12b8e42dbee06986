/* Compiled CPU compositing for the tile-based rasterizer: the C kernels of rasterize_native.py,
 * and, at the end of the file, a render's set-up (EWA projection forward and backward, the
 * depth-sorted tile lists), which runs single-threaded.
 *
 * Same algorithm, culling and thresholds as the numba kernels (rasterize_numba.py) and gsplat's
 * rasterize_to_pixels: per 16x16 tile, the Gaussians overlapping it front to back; each pixel
 * skips a Gaussian when sigma < 0 or alpha < 1/255 and stops before the one that would take T to
 * <= 1e-4. The loops are Gaussian-major over each Gaussian's alpha >= 1/255 box, one 16-pixel tile
 * row at a time with the 16 lanes masked by the box, so the compiler vectorises every row
 * (`#pragma omp simd`, -O3 -march=native); exp is a branch-free polynomial (Cephes expf /
 * exp: relative error under 1e-7 in float32, 1e-15 in float64) so it vectorises too.
 *
 * Every compositing kernel takes (first, step): it does tiles (or queries) first, first + step, ...; Python
 * runs one call per thread (ctypes releases the GIL), so no OpenMP runtime is linked.
 * Built for float (suffix _f32) and double (_f64). The backward recovers T_i by division from the
 * final T in double precision, as gsplat does.
 */
#ifndef FOURREAL_KERNEL_PASS
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TS 16
#define NPIX (TS * TS)

static inline float exp_neg_f32(float x) { /* exp(x), x <= 0 */
    x = x < -87.0f ? -87.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)(n + 127.0f)) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return y * s;
}

static inline double exp_neg_f64(double x) { /* exp(x), x <= 0 (Cephes exp, Pade form) */
    x = x < -700.0 ? -700.0 : x;
    double n = floor(x * 1.4426950408889634073599 + 0.5);
    double r = x - n * 6.93145751953125E-1 - n * 1.42860682030941723212E-6;
    double rr = r * r;
    double p = ((1.26177193074810590878E-4 * rr + 3.02994407707441961300E-2) * rr + 9.99999999999999999910E-1) * r;
    double q = ((3.00198505138664455042E-6 * rr + 2.52448340349684104192E-3) * rr + 2.27265548208155028766E-1) * rr
               + 2.00000000000000000009E0;
    double y = 1.0 + 2.0 * p / (q - p);
    int64_t bits = ((int64_t)(n + 1023.0)) << 52;
    double s;
    memcpy(&s, &bits, 8);
    return y * s;
}

/* Stable LSD radix sort of n unsigned keys (11-bit digits, `bits` significant bits): idx holds
 * 0..n-1 on entry (so ties keep index order, as torch.argsort(stable=True)) and the sorted
 * order on exit. Used by the binning below: one depth sort per render. */
static int radix_sort(uint64_t *key, int64_t *idx, int64_t n, int bits) {
    uint64_t *k2 = (uint64_t *)malloc(sizeof(uint64_t) * (n ? n : 1));
    int64_t *i2 = (int64_t *)malloc(sizeof(int64_t) * (n ? n : 1));
    if (!k2 || !i2) { free(k2); free(i2); return -1; }
    for (int shift = 0; shift < bits; shift += 11) {
        int64_t hist[2049];
        memset(hist, 0, sizeof(hist));
        for (int64_t i = 0; i < n; i++) hist[((key[i] >> shift) & 2047) + 1]++;
        if (hist[1] == n) continue; /* every key has this digit 0: the pass keeps the order */
        for (int d = 0; d < 2048; d++) hist[d + 1] += hist[d];
        for (int64_t i = 0; i < n; i++) {
            const int64_t o = hist[(key[i] >> shift) & 2047]++;
            k2[o] = key[i];
            i2[o] = idx[i];
        }
        memcpy(key, k2, sizeof(uint64_t) * n);
        memcpy(idx, i2, sizeof(int64_t) * n);
    }
    free(k2);
    free(i2);
    return 0;
}

static inline uint64_t sortable_f32(float v) { /* order of the floats = order of the keys */
    uint32_t b;
    memcpy(&b, &v, 4);
    return (b & 0x80000000u) ? (uint64_t)(~b) : (uint64_t)(b | 0x80000000u);
}

static inline uint64_t sortable_f64(double v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}

/* the kernels below are compiled twice: float (suffix _f32) and double (_f64) */
#define FOURREAL_KERNEL_PASS
#define REAL float
#define KNAME(n) n##_f32
#define EXPNEG exp_neg_f32
#define LOG logf
#define SQRT sqrtf
#define FLOOR floorf
#define CEIL ceilf
#define SORTABLE sortable_f32
#define KEYBITS 32
#include __FILE__
#undef REAL
#undef KNAME
#undef EXPNEG
#undef LOG
#undef SQRT
#undef FLOOR
#undef CEIL
#undef SORTABLE
#undef KEYBITS
#define REAL double
#define KNAME(n) n##_f64
#define EXPNEG exp_neg_f64
#define LOG log
#define SQRT sqrt
#define FLOOR floor
#define CEIL ceil
#define SORTABLE sortable_f64
#define KEYBITS 64
#include __FILE__

#else /* FOURREAL_KERNEL_PASS: one precision's kernels */

void KNAME(forward)(const REAL *packed, int64_t F, const REAL *consts, const int64_t *box,
                   const int64_t *pair_gid, const int64_t *tile_off, int64_t C, int64_t H, int64_t W,
                   int64_t tw, int64_t th, REAL *acc, REAL *Tfin, int64_t *last, int64_t first,
                   int64_t step) {
    const int64_t D = F - 6;
    const REAL amax = consts[1], athr = consts[2], tthr = consts[3];
    const int64_t ntiles = C * tw * th;
    REAL *accl = (REAL *)malloc(sizeof(REAL) * NPIX * (D > 0 ? D : 1));
    for (int64_t t = first; t < ntiles; t += step) {
        int64_t c = t / (tw * th), r = t - c * tw * th, ty = r / tw, tx = r - ty * tw;
        int64_t s = tile_off[t], e = tile_off[t + 1];
        int64_t ox = tx * TS, oy = ty * TS;
        int64_t x1 = (W < ox + TS ? W : ox + TS) - 1, y1 = (H < oy + TS ? H : oy + TS) - 1;
        REAL T[NPIX];
        int64_t lastl[NPIX];
        REAL lxf[TS];
        for (int i = 0; i < NPIX; i++) { T[i] = 1; lastl[i] = s; }
        for (int64_t i = 0; i < NPIX * D; i++) accl[i] = 0;
        for (int i = 0; i < TS; i++) lxf[i] = (REAL)(ox + i) + (REAL)0.5;
        int64_t npix = (x1 - ox + 1) * (y1 - oy + 1), ndone = 0;
        for (int64_t k = s; k < e && ndone < npix; k++) {
            const int64_t g = pair_gid[k];
            const REAL *pg = packed + g * F;
            const REAL mx = pg[0], my = pg[1], A = pg[2], B = pg[3], Cc = pg[4], o = pg[5];
            const REAL smax = LOG(o * (REAL)255);
            const int64_t xa = (box[g * 4 + 0] > ox ? box[g * 4 + 0] : ox) - ox;
            const int64_t xb = (box[g * 4 + 1] < x1 ? box[g * 4 + 1] : x1) - ox;
            const int64_t ya = box[g * 4 + 2] > oy ? box[g * 4 + 2] : oy;
            const int64_t yb = box[g * 4 + 3] < y1 ? box[g * 4 + 3] : y1;
            const int64_t kk = k + 1;
            for (int64_t py = ya; py <= yb; py++) {
                const REAL dy = my - ((REAL)py + (REAL)0.5);
                const REAL hc = (REAL)0.5 * Cc * dy * dy, bdy = B * dy;
                REAL *Tr = T + (py - oy) * TS;
                int64_t *Lr = lastl + (py - oy) * TS;
                REAL wv[TS];
                int64_t stops = 0;
                #pragma omp simd reduction(+:stops)
                for (int i = 0; i < TS; i++) {
                    const REAL Ti = Tr[i];
                    const REAL dx = mx - lxf[i];
                    const REAL sigma = (REAL)0.5 * A * dx * dx + hc + bdy * dx;
                    const REAL sc = sigma < 0 ? 0 : (sigma > smax ? smax : sigma);
                    REAL alpha = o * EXPNEG(-sc);
                    alpha = alpha < amax ? alpha : amax;
                    const int ok = (Ti > 0) & (sigma >= 0) & (sigma <= smax) & (alpha >= athr) & (i >= xa)
                                   & (i <= xb);
                    const REAL nT = Ti * ((REAL)1 - alpha);
                    const int stop = ok & (nT <= tthr);
                    const int comp = ok & (nT > tthr);
                    wv[i] = comp ? alpha * Ti : (REAL)0;
                    Tr[i] = comp ? nT : (stop ? -Ti : Ti);
                    Lr[i] = comp ? kk : Lr[i];
                    stops += stop;
                }
                for (int64_t d = 0; d < D; d++) {
                    const REAL f = pg[6 + d];
                    REAL *ar = accl + d * NPIX + (py - oy) * TS;
                    #pragma omp simd
                    for (int i = 0; i < TS; i++) ar[i] += wv[i] * f;
                }
                ndone += stops;
            }
        }
        for (int64_t py = oy; py <= y1; py++)
            for (int64_t px = ox; px <= x1; px++) {
                const int64_t li = (py - oy) * TS + px - ox, pix = (c * H + py) * W + px;
                for (int64_t d = 0; d < D; d++) acc[pix * D + d] = accl[d * NPIX + li];
                Tfin[pix] = T[li] < 0 ? -T[li] : T[li];
                last[pix] = lastl[li];
            }
    }
    free(accl);
}

void KNAME(backward)(const REAL *packed, int64_t F, const int64_t *box, const int64_t *pair_gid,
                    const int64_t *tile_off, int64_t C, int64_t H, int64_t W, int64_t tw, int64_t th,
                    const REAL *Tfin, const int64_t *last, const REAL *g_acc, const REAL *g_T,
                    REAL *g_pairs, int64_t first, int64_t step) {
    const int64_t D = F - 6;
    const double amax = 0.99, athr = 1.0 / 255.0;
    const int64_t ntiles = C * tw * th;
    const int64_t Dm = D > 0 ? D : 1;
    double *gp = (double *)malloc(sizeof(double) * NPIX * Dm);
    double *buf = (double *)malloc(sizeof(double) * NPIX * Dm);
    double *feat = (double *)malloc(sizeof(double) * Dm);
    double *gf = (double *)malloc(sizeof(double) * Dm);
    for (int64_t t = first; t < ntiles; t += step) {
        int64_t c = t / (tw * th), r = t - c * tw * th, ty = r / tw, tx = r - ty * tw;
        int64_t s = tile_off[t];
        int64_t ox = tx * TS, oy = ty * TS;
        int64_t x1 = (W < ox + TS ? W : ox + TS) - 1, y1 = (H < oy + TS ? H : oy + TS) - 1;
        double T[NPIX], Tf[NPIX], gt[NPIX], lastd[NPIX]; /* lastd: last[] as doubles (all lanes double) */
        double lxf[TS];
        for (int i = 0; i < NPIX; i++) { T[i] = 1; Tf[i] = 1; gt[i] = 0; lastd[i] = (double)s; }
        for (int64_t i = 0; i < NPIX * D; i++) { gp[i] = 0; buf[i] = 0; }
        for (int i = 0; i < TS; i++) lxf[i] = (double)(ox + i) + 0.5;
        int64_t e = s;
        double rowlast[TS];
        for (int i = 0; i < TS; i++) rowlast[i] = (double)s;
        for (int64_t py = oy; py <= y1; py++)
            for (int64_t px = ox; px <= x1; px++) {
                const int64_t li = (py - oy) * TS + px - ox, pix = (c * H + py) * W + px;
                T[li] = Tfin[pix];
                Tf[li] = Tfin[pix];
                gt[li] = g_T[pix];
                lastd[li] = (double)last[pix];
                if (last[pix] > e) e = last[pix];
                if ((double)last[pix] > rowlast[py - oy]) rowlast[py - oy] = (double)last[pix];
                for (int64_t d = 0; d < D; d++) gp[d * NPIX + li] = g_acc[pix * D + d];
            }
        for (int64_t k = e - 1; k >= s; k--) {
            const int64_t g = pair_gid[k];
            const REAL *pg = packed + g * F;
            const double mx = pg[0], my = pg[1], A = pg[2], B = pg[3], Cc = pg[4], o = pg[5];
            const double smax = log(o * 255.0);
            for (int64_t d = 0; d < D; d++) feat[d] = pg[6 + d];
            double g_mx = 0, g_my = 0, g_A = 0, g_B = 0, g_C = 0, g_o = 0;
            REAL *gk = g_pairs + k * F;
            for (int64_t d = 0; d < D; d++) gf[d] = 0;
            const int64_t xa = (box[g * 4 + 0] > ox ? box[g * 4 + 0] : ox) - ox;
            const int64_t xb = (box[g * 4 + 1] < x1 ? box[g * 4 + 1] : x1) - ox;
            const int64_t ya = box[g * 4 + 2] > oy ? box[g * 4 + 2] : oy;
            const int64_t yb = box[g * 4 + 3] < y1 ? box[g * 4 + 3] : y1;
            const double kd = (double)k, xlo = (double)(ox + xa) + 0.5, xhi = (double)(ox + xb) + 0.5;
            for (int64_t py = ya; py <= yb; py++) {
                if (kd >= rowlast[py - oy]) continue; /* every pixel of the row stopped before k */
                const double dy = my - ((double)py + 0.5);
                const int64_t row = (py - oy) * TS;
                double w[TS], Ti_[TS], ra_[TS], m_[TS], vis_[TS], araw_[TS], dx_[TS], va[TS];
                #pragma omp simd
                for (int i = 0; i < TS; i++) {
                    const double dx = mx - lxf[i];
                    const double sigma = 0.5 * (A * dx * dx + Cc * dy * dy) + B * dx * dy;
                    const double sc = sigma < 0 ? 0 : (sigma > smax ? smax : sigma);
                    const double vis = exp_neg_f64(-sc);
                    const double araw = o * vis;
                    /* min(araw, amax) as a blend: the select form keeps GCC from vectorising the loop
                       (without -ffinite-math-only); exact when araw <= amax, within an ulp otherwise */
                    const double over = araw > amax ? 1.0 : 0.0;
                    const double alpha = araw + over * (amax - araw);
                    const int ok = (kd < lastd[row + i]) & (sigma >= 0) & (sigma <= smax) & (alpha >= athr)
                                   & (lxf[i] >= xlo) & (lxf[i] <= xhi);
                    const double m = ok ? 1.0 : 0.0;
                    const double ra = 1.0 / (1.0 - alpha);
                    const double Tc = T[row + i];
                    const double Ti = Tc * ra;
                    T[row + i] = ok ? Ti : Tc;
                    w[i] = alpha * Ti * m;
                    Ti_[i] = Ti; ra_[i] = ra; m_[i] = m; vis_[i] = vis; araw_[i] = araw; dx_[i] = dx;
                    va[i] = 0;
                }
                for (int64_t d = 0; d < D; d++) {
                    double *gpd = gp + d * NPIX + row, *bd = buf + d * NPIX + row;
                    const double fd = feat[d];
                    double gsum = 0;
                    #pragma omp simd reduction(+:gsum)
                    for (int i = 0; i < TS; i++) {
                        gsum += w[i] * gpd[i];
                        va[i] += (fd * Ti_[i] - bd[i] * ra_[i]) * gpd[i];
                        bd[i] += fd * w[i];
                    }
                    gf[d] += gsum;
                }
                #pragma omp simd reduction(+:g_mx, g_my, g_A, g_B, g_C, g_o)
                for (int i = 0; i < TS; i++) {
                    double v_alpha = (va[i] - Tf[row + i] * ra_[i] * gt[row + i]) * m_[i];
                    v_alpha = araw_[i] > amax ? 0.0 : v_alpha;
                    const double v_sigma = -araw_[i] * v_alpha;
                    const double dx = dx_[i];
                    g_mx += v_sigma * (A * dx + B * dy);
                    g_my += v_sigma * (B * dx + Cc * dy);
                    g_A += 0.5 * v_sigma * dx * dx;
                    g_B += v_sigma * dx * dy;
                    g_C += 0.5 * v_sigma * dy * dy;
                    g_o += vis_[i] * v_alpha;
                }
            }
            gk[0] = (REAL)g_mx; gk[1] = (REAL)g_my; gk[2] = (REAL)g_A;
            gk[3] = (REAL)g_B; gk[4] = (REAL)g_C; gk[5] = (REAL)g_o;
            for (int64_t d = 0; d < D; d++) gk[6 + d] = (REAL)gf[d];
        }
    }
    free(gp); free(buf); free(feat); free(gf);
}

void KNAME(sum_pairs)(const int64_t *pair_gid, int64_t n_pairs, int64_t F, const REAL *g_pairs,
                     REAL *g_packed) {
    for (int64_t k = 0; k < n_pairs; k++) {
        REAL *dst = g_packed + pair_gid[k] * F;
        const REAL *src = g_pairs + k * F;
        for (int64_t f = 0; f < F; f++) dst[f] += src[f];
    }
}

/* pixel weights: count pass (start == NULL: qi[q] = count) or fill pass */
void KNAME(pixel_walk)(const REAL *geo, const REAL *consts, const int64_t *box, const int64_t *pair_gid,
                      const int64_t *tile_off, int64_t tw, const int64_t *qx, const int64_t *qy, int64_t Q,
                      const int64_t *start, int64_t *qi, int64_t *gi, REAL *wi, int64_t first,
                      int64_t step) {
    const REAL amax = consts[1], athr = consts[2], tthr = consts[3];
    for (int64_t q = first; q < Q; q += step) {
        const int64_t px = qx[q], py = qy[q], t = (py / TS) * tw + px / TS;
        REAL T = 1;
        int64_t m = 0, o_ = start ? start[q] : 0;
        for (int64_t k = tile_off[t]; k < tile_off[t + 1]; k++) {
            const int64_t g = pair_gid[k];
            if (px < box[g * 4] || px > box[g * 4 + 1] || py < box[g * 4 + 2] || py > box[g * 4 + 3])
                continue;
            const REAL *pg = geo + g * 6;
            const REAL o = pg[5], smax = LOG(o * (REAL)255);
            const REAL dx = pg[0] - ((REAL)px + (REAL)0.5), dy = pg[1] - ((REAL)py + (REAL)0.5);
            const REAL sigma = (REAL)0.5 * pg[2] * dx * dx + (REAL)0.5 * pg[4] * dy * dy + pg[3] * dy * dx;
            if (sigma < 0 || sigma > smax) continue;
            REAL alpha = o * EXPNEG(-sigma);
            alpha = alpha < amax ? alpha : amax;
            if (alpha < athr) continue;
            const REAL nT = T * ((REAL)1 - alpha);
            if (nT <= tthr) break;
            if (start) { qi[o_ + m] = q; gi[o_ + m] = g; wi[o_ + m] = alpha * T; }
            m++;
            T = nT;
        }
        if (!start) qi[q] = m;
    }
}

/* ---------------------------------------------------------------------------------------------
 * The set-up of a render, without gradient: the EWA projection (rasterize_torch.project_gaussians)
 * and the depth-sorted tile lists (rasterize_torch.bin_tiles). Same expressions in the same order
 * and precision as the torch code, with no fused multiply-adds, so the lists match its lists.
 */
#if defined(__clang__)
#define NO_CONTRACT _Pragma("clang fp contract(off)")
#else
#define NO_CONTRACT
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

/* the range project_gaussians clamps x/z and y/z to (30% beyond the image, as gsplat) */
static inline void KNAME(uv_bounds)(const REAL *K, int64_t W, int64_t H, REAL *uv) {
    NO_CONTRACT
    const REAL fx = K[0], fy = K[4], cx = K[2], cy = K[5];
    const REAL tan_fovx = (REAL)(0.5 * (double)W) / fx, tan_fovy = (REAL)(0.5 * (double)H) / fy;
    uv[0] = -(cx / fx + (REAL)0.3 * tan_fovx);
    uv[1] = ((REAL)W - cx) / fx + (REAL)0.3 * tan_fovx;
    uv[2] = -(cy / fy + (REAL)0.3 * tan_fovy);
    uv[3] = ((REAL)H - cy) / fy + (REAL)0.3 * tan_fovy;
}

/* one Gaussian's camera-space quantities, shared by the projection's forward and backward: the
 * normalised quaternion (wxyz; *nclamp when |q| was clamped at 1e-12, *nrm the divisor), R(q),
 * M = R diag(s), Mc = Rw M, pc = Rw m + t and the camera covariance Mc Mc^T as
 * (s00, s01, s02, s11, s12, s22) -- the torch code's expressions in its order */
static inline void KNAME(gaussian_in_camera)(const REAL *q, const REAL *s, const REAL *m, const REAL *Rw, REAL *qn,
                                              REAL *nrm_out, int *nclamp, REAL *R, REAL *M, REAL *Mc, REAL *pc,
                                              REAL *sig) {
    NO_CONTRACT
    REAL nrm = SQRT(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    *nclamp = !(nrm > (REAL)1e-12);
    nrm = *nclamp ? (REAL)1e-12 : nrm;
    *nrm_out = nrm;
    const REAL w = q[0] / nrm, x = q[1] / nrm, y = q[2] / nrm, z = q[3] / nrm;
    qn[0] = w; qn[1] = x; qn[2] = y; qn[3] = z;
    R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - w * z); R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z); R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y); R[7] = 2 * (y * z + w * x); R[8] = 1 - 2 * (x * x + y * y);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) M[i * 3 + j] = R[i * 3 + j] * s[j];
    for (int i = 0; i < 3; i++) {
        pc[i] = Rw[i * 4] * m[0] + Rw[i * 4 + 1] * m[1] + Rw[i * 4 + 2] * m[2] + Rw[i * 4 + 3];
        for (int k = 0; k < 3; k++) Mc[i * 3 + k] = Rw[i * 4] * M[k] + Rw[i * 4 + 1] * M[3 + k] + Rw[i * 4 + 2] * M[6 + k];
    }
    const REAL *r0 = Mc, *r1 = Mc + 3, *r2 = Mc + 6;
    sig[0] = r0[0] * r0[0] + r0[1] * r0[1] + r0[2] * r0[2];
    sig[1] = r0[0] * r1[0] + r0[1] * r1[1] + r0[2] * r1[2];
    sig[2] = r0[0] * r2[0] + r0[1] * r2[1] + r0[2] * r2[2];
    sig[3] = r1[0] * r1[0] + r1[1] * r1[1] + r1[2] * r1[2];
    sig[4] = r1[0] * r2[0] + r1[1] * r2[1] + r1[2] * r2[2];
    sig[5] = r2[0] * r2[0] + r2[1] * r2[1] + r2[2] * r2[2];
}

/* one camera: viewmat [4,4] row-major world-to-camera, K [3,3] */
void KNAME(project)(const REAL *means, const REAL *quats, const REAL *scales, const REAL *viewmat, const REAL *K,
                    int64_t N, int64_t W, int64_t H, REAL eps2d, REAL near_plane, REAL far_plane, REAL *means2d,
                    REAL *conics, REAL *cov2d, REAL *depths, int32_t *radii) {
    NO_CONTRACT
    const REAL fx = K[0], fy = K[4], cx = K[2], cy = K[5];
    REAL uv[4]; /* the clamp of x/z and y/z: umin, umax, vmin, vmax */
    KNAME(uv_bounds)(K, W, H, uv);
    const REAL umin = uv[0], umax = uv[1], vmin = uv[2], vmax = uv[3];
    for (int64_t n = 0; n < N; n++) {
        REAL qn[4], nrm, R[9], M[9], Mc[9], pc[3], sig[6];
        int nclamp;
        KNAME(gaussian_in_camera)(quats + 4 * n, scales + 3 * n, means + 3 * n, viewmat, qn, &nrm, &nclamp, R, M, Mc,
                                  pc, sig);
        const REAL s00 = sig[0], s01 = sig[1], s02 = sig[2], s11 = sig[3], s12 = sig[4], s22 = sig[5];
        const REAL tx = pc[0], ty = pc[1], tz = pc[2];
        int valid = (tz > near_plane) && (tz < far_plane);
        const REAL zz = valid ? tz : (REAL)1;
        REAL u = tx / zz, v = ty / zz;
        u = u < umin ? umin : (u > umax ? umax : u);
        v = v < vmin ? vmin : (v > vmax ? vmax : v);
        const REAL gx = fx / zz, gy = fy / zz;
        const REAL a = gx * gx * (s00 - 2 * u * s02 + u * u * s22) + eps2d;
        const REAL b = gx * gy * (s01 - u * s12 - v * s02 + u * v * s22);
        const REAL c = gy * gy * (s11 - 2 * v * s12 + v * v * s22) + eps2d;
        const REAL det = a * c - b * b;
        valid = valid && det > 0;
        const REAL det_s = valid ? det : (REAL)1;
        conics[3 * n] = c / det_s;
        conics[3 * n + 1] = -b / det_s;
        conics[3 * n + 2] = a / det_s;
        cov2d[3 * n] = a;
        cov2d[3 * n + 1] = b;
        cov2d[3 * n + 2] = c;
        const REAL mx = fx * tx / zz + cx, my = fy * ty / zz + cy;
        means2d[2 * n] = mx;
        means2d[2 * n + 1] = my;
        depths[n] = tz;
        const REAL mid = (REAL)0.5 * (a + c);
        REAL disc = mid * mid - det;
        disc = disc > (REAL)0.01 ? disc : (REAL)0.01;
        const REAL lam = mid + SQRT(disc);
        const REAL radius = CEIL((REAL)3 * SQRT(lam > 0 ? lam : (REAL)0));
        const int inside = (mx + radius > 0) && (mx - radius < (REAL)W) && (my + radius > 0) && (my - radius < (REAL)H);
        radii[n] = (valid && inside) ? (int32_t)radius : 0;
    }
}

/* the projection's backward (one camera): the gradients of means2d [N,2], conics [N,3] and depths
 * [N] (g_depths may be NULL) added into g_means [N,3], g_quats [N,4], g_scales [N,3]; the forward
 * is recomputed. The same derivative torch's autograd takes of project_gaussians: no gradient
 * through a clamped u or v, through z = 1 of a Gaussian off the near/far range, or through
 * det = 1 of a degenerate one. */
void KNAME(project_bwd)(const REAL *means, const REAL *quats, const REAL *scales, const REAL *viewmat, const REAL *K,
                        int64_t N, int64_t W, int64_t H, REAL eps2d, REAL near_plane, REAL far_plane,
                        const REAL *g_means2d, const REAL *g_conics, const REAL *g_depths, REAL *g_means,
                        REAL *g_quats, REAL *g_scales, double *g_viewmat /* [12] rows 0-2 of [4,4], or NULL */) {
    NO_CONTRACT
    const REAL fx = K[0], fy = K[4];
    REAL uv[4];
    KNAME(uv_bounds)(K, W, H, uv);
    const REAL umin = uv[0], umax = uv[1], vmin = uv[2], vmax = uv[3];
    const REAL *Rw = viewmat; /* rows i: Rw[i*4 + j] */
    for (int64_t n = 0; n < N; n++) {
        const REAL *s = scales + 3 * n;
        const REAL *gm2 = g_means2d + 2 * n, *gcn = g_conics + 3 * n;
        const REAL gdep = g_depths ? g_depths[n] : (REAL)0;
        if (gm2[0] == 0 && gm2[1] == 0 && gcn[0] == 0 && gcn[1] == 0 && gcn[2] == 0 && gdep == 0) continue;
        /* forward again */
        REAL qn[4], nrm, R[9], M[9], Mc[9], pc[3], sig[6];
        int nclamp;
        KNAME(gaussian_in_camera)(quats + 4 * n, scales + 3 * n, means + 3 * n, Rw, qn, &nrm, &nclamp, R, M, Mc, pc,
                                  sig);
        const REAL w = qn[0], x = qn[1], y = qn[2], z = qn[3];
        const REAL *r0 = Mc, *r1 = Mc + 3, *r2 = Mc + 6;
        const REAL s00 = sig[0], s01 = sig[1], s02 = sig[2], s11 = sig[3], s12 = sig[4], s22 = sig[5];
        const REAL tx = pc[0], ty = pc[1], tz = pc[2];
        const int zvalid = (tz > near_plane) && (tz < far_plane);
        const REAL zz = zvalid ? tz : (REAL)1;
        const REAL u0 = tx / zz, v0 = ty / zz;
        const int uin = u0 >= umin && u0 <= umax, vin = v0 >= vmin && v0 <= vmax;
        const REAL u = u0 < umin ? umin : (u0 > umax ? umax : u0);
        const REAL v = v0 < vmin ? vmin : (v0 > vmax ? vmax : v0);
        const REAL gx = fx / zz, gy = fy / zz;
        const REAL P = s00 - 2 * u * s02 + u * u * s22;
        const REAL Q = s01 - u * s12 - v * s02 + u * v * s22;
        const REAL S = s11 - 2 * v * s12 + v * v * s22;
        const REAL a = gx * gx * P + eps2d, b = gx * gy * Q, c = gy * gy * S + eps2d;
        const REAL det = a * c - b * b;
        const int dvalid = zvalid && det > 0;
        /* conics -> (a, b, c) */
        REAL ga, gb, gc;
        if (dvalid) {
            const REAL id = 1 / det, id2 = id * id;
            const REAL gA = gcn[0], gB = gcn[1], gC = gcn[2];
            /* A = c/D, B = -b/D, C = a/D with D = a c - b^2 */
            const REAL gD = -(gA * c - gB * b + gC * a) * id2;
            ga = gC * id + gD * c;
            gb = -gB * id + gD * (-2 * b);
            gc = gA * id + gD * a;
        } else {
            ga = gcn[2];
            gb = -gcn[1];
            gc = gcn[0];
        }
        /* (a, b, c) -> gx, gy, P, Q, S */
        REAL ggx = ga * 2 * gx * P + gb * gy * Q;
        REAL ggy = gb * gx * Q + gc * 2 * gy * S;
        const REAL gP = ga * gx * gx, gQ = gb * gx * gy, gS = gc * gy * gy;
        /* P, Q, S -> sigma entries and u, v */
        const REAL g00 = gP, g01 = gQ, g02 = -2 * u * gP - v * gQ, g11 = gS, g12 = -u * gQ - 2 * v * gS;
        const REAL g22 = u * u * gP + u * v * gQ + v * v * gS;
        REAL gu = gP * (-2 * s02 + 2 * u * s22) + gQ * (-s12 + v * s22);
        REAL gv = gQ * (-s02 + u * s22) + gS * (-2 * s12 + 2 * v * s22);
        /* means2d: mx = fx tx / z + cx, my = fy ty / z + cy */
        REAL gtx = gm2[0] * fx / zz, gty = gm2[1] * fy / zz;
        REAL gz = -(gm2[0] * fx * tx + gm2[1] * fy * ty) / (zz * zz);
        gz += -(ggx * fx + ggy * fy) / (zz * zz);
        if (uin) { gtx += gu / zz; gz += -gu * tx / (zz * zz); }
        if (vin) { gty += gv / zz; gz += -gv * ty / (zz * zz); }
        REAL gtz = gdep + (zvalid ? gz : (REAL)0);
        /* pc = Rw m + t -> means */
        for (int j = 0; j < 3; j++) g_means[3 * n + j] += Rw[j] * gtx + Rw[4 + j] * gty + Rw[8 + j] * gtz;
        /* sigma = Mc Mc^T -> Mc rows */
        REAL gMc[9];
        for (int k = 0; k < 3; k++) {
            gMc[k] = 2 * g00 * r0[k] + g01 * r1[k] + g02 * r2[k];
            gMc[3 + k] = g01 * r0[k] + 2 * g11 * r1[k] + g12 * r2[k];
            gMc[6 + k] = g02 * r0[k] + g12 * r1[k] + 2 * g22 * r2[k];
        }
        if (g_viewmat) { /* pc = Rw m + t, Mc = Rw M -> the camera (summed over the Gaussians in double) */
            const REAL *m = means + 3 * n, gpc[3] = {gtx, gty, gtz};
            for (int i = 0; i < 3; i++) {
                for (int j = 0; j < 3; j++)
                    g_viewmat[i * 4 + j] += (double)gpc[i] * m[j] + (double)gMc[i * 3] * M[j * 3]
                                            + (double)gMc[i * 3 + 1] * M[j * 3 + 1] + (double)gMc[i * 3 + 2] * M[j * 3 + 2];
                g_viewmat[i * 4 + 3] += gpc[i];
            }
        }
        /* Mc = Rw M -> M;  M = R diag(s) -> R, s */
        REAL gR[9];
        for (int j = 0; j < 3; j++) {
            REAL gsj = 0;
            for (int i = 0; i < 3; i++) {
                const REAL gM = Rw[i] * gMc[j] + Rw[4 + i] * gMc[3 + j] + Rw[8 + i] * gMc[6 + j];
                gR[i * 3 + j] = gM * s[j];
                gsj += gM * R[i * 3 + j];
            }
            g_scales[3 * n + j] += gsj;
        }
        /* R(w, x, y, z) -> the normalised quaternion */
        const REAL gw = 2 * (-z * gR[1] + y * gR[2] + z * gR[3] - x * gR[5] - y * gR[6] + x * gR[7]);
        const REAL gxq = 2 * (y * gR[1] + z * gR[2] + y * gR[3] - 2 * x * gR[4] - w * gR[5] + z * gR[6] + w * gR[7]
                              - 2 * x * gR[8]);
        const REAL gyq = 2 * (-2 * y * gR[0] + x * gR[1] + w * gR[2] + x * gR[3] + z * gR[5] - w * gR[6] + z * gR[7]
                              - 2 * y * gR[8]);
        const REAL gzq = 2 * (-2 * z * gR[0] - w * gR[1] + x * gR[2] + w * gR[3] - 2 * z * gR[4] + y * gR[5]
                              + x * gR[6] + y * gR[7]);
        /* q / max(|q|, 1e-12) -> q */
        const REAL dotq = nclamp ? (REAL)0 : (w * gw + x * gxq + y * gyq + z * gzq);
        g_quats[4 * n] += (gw - w * dotq) / nrm;
        g_quats[4 * n + 1] += (gxq - x * dotq) / nrm;
        g_quats[4 * n + 2] += (gyq - y * dotq) / nrm;
        g_quats[4 * n + 3] += (gzq - z * dotq) / nrm;
    }
}

static inline REAL KNAME(clampr)(REAL x, REAL lo, REAL hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* tile lists, pass 1 (rasterize_torch.footprints): per (camera, Gaussian) the alpha >= 1/255 box,
 * its tile rectangle (tx0, nx, ty0, ny) and tiles_per_gauss; returns the number of pairs */
int64_t KNAME(bin_count)(const REAL *means2d, const REAL *cov2d, const REAL *op, const int32_t *radii, int64_t CN,
                         int64_t W, int64_t H, int64_t ts, REAL alpha_thr, int64_t *box, int64_t *rect,
                         int64_t *tpg, int64_t *cnt) {
    NO_CONTRACT
    const int64_t tw = (W + ts - 1) / ts, th = (H + ts - 1) / ts;
    const REAL t = (REAL)ts;
    int64_t total = 0;
    for (int64_t i = 0; i < CN; i++) {
        const REAL mx = means2d[2 * i], my = means2d[2 * i + 1], r = (REAL)radii[i];
        const int vis = radii[i] > 0;
        const int64_t tminx = (int64_t)KNAME(clampr)(FLOOR(mx / t - r / t), 0, (REAL)tw);
        const int64_t tmaxx = (int64_t)KNAME(clampr)(CEIL(mx / t + r / t), 0, (REAL)tw);
        const int64_t tminy = (int64_t)KNAME(clampr)(FLOOR(my / t - r / t), 0, (REAL)th);
        const int64_t tmaxy = (int64_t)KNAME(clampr)(CEIL(my / t + r / t), 0, (REAL)th);
        tpg[i] = vis ? (tmaxx - tminx) * (tmaxy - tminy) : 0;
        const REAL o = op[i];
        REAL o255 = o * (REAL)255.0;
        o255 = o255 > (REAL)1e-30 ? o255 : (REAL)1e-30;
        REAL smax = LOG(o255) + (REAL)1e-3;
        smax = smax > 0 ? smax : (REAL)0;
        int ok = vis && o >= alpha_thr && tpg[i] > 0;
        const REAL ca = cov2d[3 * i] > 0 ? cov2d[3 * i] : (REAL)0, cc = cov2d[3 * i + 2] > 0 ? cov2d[3 * i + 2] : (REAL)0;
        const REAL ex = SQRT(2 * smax * ca) * (REAL)(1 + 1e-4) + (REAL)1e-3;
        const REAL ey = SQRT(2 * smax * cc) * (REAL)(1 + 1e-4) + (REAL)1e-3;
        REAL j0 = CEIL(KNAME(clampr)(mx - ex - (REAL)0.5, -1, (REAL)(W + 1)));
        REAL j1 = FLOOR(KNAME(clampr)(mx + ex - (REAL)0.5, -1, (REAL)(W + 1)));
        REAL i0 = CEIL(KNAME(clampr)(my - ey - (REAL)0.5, -1, (REAL)(H + 1)));
        REAL i1 = FLOOR(KNAME(clampr)(my + ey - (REAL)0.5, -1, (REAL)(H + 1)));
        j0 = j0 > 0 ? j0 : (REAL)0;
        j1 = j1 < (REAL)(W - 1) ? j1 : (REAL)(W - 1);
        i0 = i0 > 0 ? i0 : (REAL)0;
        i1 = i1 < (REAL)(H - 1) ? i1 : (REAL)(H - 1);
        ok = ok && j0 <= j1 && i0 <= i1;
        box[4 * i] = (int64_t)j0;
        box[4 * i + 1] = (int64_t)j1;
        box[4 * i + 2] = (int64_t)i0;
        box[4 * i + 3] = (int64_t)i1;
        int64_t tx0 = (int64_t)FLOOR(j0 / t), tx1 = (int64_t)FLOOR(j1 / t) + 1;
        int64_t ty0 = (int64_t)FLOOR(i0 / t), ty1 = (int64_t)FLOOR(i1 / t) + 1;
        tx0 = tx0 > tminx ? tx0 : tminx;
        tx1 = tx1 < tmaxx ? tx1 : tmaxx;
        ty0 = ty0 > tminy ? ty0 : tminy;
        ty1 = ty1 < tmaxy ? ty1 : tmaxy;
        const int64_t nx = tx1 > tx0 ? tx1 - tx0 : 0, ny = ty1 > ty0 ? ty1 - ty0 : 0;
        rect[4 * i] = tx0;
        rect[4 * i + 1] = nx;
        rect[4 * i + 2] = ty0;
        rect[4 * i + 3] = ny;
        cnt[i] = ok ? nx * ny : 0;
        total += cnt[i];
    }
    return total;
}

/* tile lists, pass 2: the listed Gaussians sorted by depth (stable), then each tile's list in
 * that order (rasterize_torch.bin_tiles' stable sort of the pairs by tile); 0, or -1 out of memory */
int KNAME(bin_fill)(const REAL *depths, const int64_t *cnt, const int64_t *rect, int64_t CN, int64_t N, int64_t tw,
                    int64_t th, int64_t *tile_off, int64_t *pair_gid) {
    int64_t ns = 0;
    for (int64_t i = 0; i < CN; i++) ns += cnt[i] > 0;
    uint64_t *key = (uint64_t *)malloc(sizeof(uint64_t) * (ns ? ns : 1));
    int64_t *idx = (int64_t *)malloc(sizeof(int64_t) * (ns ? ns : 1));
    if (!key || !idx) { free(key); free(idx); return -1; }
    int64_t k = 0;
    for (int64_t i = 0; i < CN; i++)
        if (cnt[i] > 0) { key[k] = SORTABLE(depths[i]); idx[k] = i; k++; }
    if (radix_sort(key, idx, ns, KEYBITS)) { free(key); free(idx); return -1; }
    const int64_t ntiles = (CN / (N ? N : 1)) * th * tw;
    memset(tile_off, 0, sizeof(int64_t) * (ntiles + 1));
    for (int64_t s = 0; s < ns; s++) {
        const int64_t i = idx[s], cam = i / N, *r = rect + 4 * i;
        for (int64_t ly = 0; ly < r[3]; ly++)
            for (int64_t lx = 0; lx < r[1]; lx++) tile_off[(cam * th + r[2] + ly) * tw + r[0] + lx + 1]++;
    }
    for (int64_t t = 0; t < ntiles; t++) tile_off[t + 1] += tile_off[t];
    int64_t *cur = (int64_t *)malloc(sizeof(int64_t) * (ntiles ? ntiles : 1));
    if (!cur) { free(key); free(idx); return -1; }
    memcpy(cur, tile_off, sizeof(int64_t) * ntiles);
    for (int64_t s = 0; s < ns; s++) {
        const int64_t i = idx[s], cam = i / N, *r = rect + 4 * i;
        for (int64_t ly = 0; ly < r[3]; ly++)
            for (int64_t lx = 0; lx < r[1]; lx++) pair_gid[cur[(cam * th + r[2] + ly) * tw + r[0] + lx]++] = i;
    }
    free(cur);
    free(key);
    free(idx);
    return 0;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
#undef NO_CONTRACT

#endif

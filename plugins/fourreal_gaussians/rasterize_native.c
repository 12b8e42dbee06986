/* Compiled CPU compositing for the tile-based rasterizer: the C kernels of rasterize_native.py.
 *
 * Same algorithm, culling and thresholds as the numba kernels (rasterize_numba.py) and gsplat's
 * rasterize_to_pixels: per 16x16 tile, the Gaussians overlapping it front to back; each pixel
 * skips a Gaussian when sigma < 0 or alpha < 1/255 and stops before the one that would take T to
 * <= 1e-4. The loops are Gaussian-major over each Gaussian's alpha >= 1/255 box, one 16-pixel tile
 * row at a time with the 16 lanes masked by the box, so the compiler vectorises every row
 * (`#pragma omp simd`, -O3 -march=native); exp is a branch-free polynomial (Cephes expf /
 * exp: relative error under 1e-7 in float32, 1e-15 in float64) so it vectorises too.
 *
 * Every kernel takes (first, step): it does tiles (or queries) first, first + step, ...; Python
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

/* the kernels below are compiled twice: float (suffix _f32) and double (_f64) */
#define FOURREAL_KERNEL_PASS
#define REAL float
#define KNAME(n) n##_f32
#define EXPNEG exp_neg_f32
#define LOG logf
#include __FILE__
#undef REAL
#undef KNAME
#undef EXPNEG
#undef LOG
#define REAL double
#define KNAME(n) n##_f64
#define EXPNEG exp_neg_f64
#define LOG log
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

#endif

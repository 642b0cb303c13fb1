// Fused paste-back (CPU): warp a crop-space perturbation into the photo with bilinear
// sampling, weight it by the feather mask, add it to the uint8 pixels, round, clamp — one
// pass over the face's ROI, rows split across threads. The NumPy/OpenCV path in
// nullswap_sdk/faces/paste.py is the reference; this kernel matches it to ≤ 1 grey level
// (OpenCV quantises sample positions to 1/32 px, this kernel does not).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace py = pybind11;

namespace {

// The crop, premultiplied by the feather mask (as the reference does), padded with a zero
// border of one pixel and stored RGB0: every bilinear tap is then a branch-free 16-byte load.
struct Crop {
    std::vector<float> p;  // (S + 2) x (S + 2) x 4
    int S;
    Crop(const float* delta, const float* ramp, int S_) : p(static_cast<size_t>(S_ + 2) * (S_ + 2) * 4, 0.0f), S(S_) {
        for (int y = 0; y < S; ++y)
            for (int x = 0; x < S; ++x) {
                const float m = ramp ? std::min(ramp[y], ramp[x]) : 1.0f;
                const float* d = delta + (static_cast<size_t>(y) * S + x) * 3;
                float* q = &p[(static_cast<size_t>(y + 1) * (S + 2) + x + 1) * 4];
                q[0] = d[0] * m, q[1] = d[1] * m, q[2] = d[2] * m;
            }
    }
};

struct Job {
    uint8_t* img;
    py::ssize_t row_stride;  // bytes
    int channels;            // 3 or 4 (alpha is never touched)
    const Crop* crop;
    double m[6];             // image pixel → crop pixel
    int x0, x1;
};

// Columns X in [lo, hi) whose sample s = m·X + b may lie in (-1, S) (a tap inside the crop);
// conservative by a pixel, the exact test runs per pixel.
inline void clip_span(double m, double b, int S, int& lo, int& hi) {
    if (m == 0.0) {
        if (!(b > -1.0 && b < S)) hi = lo;
        return;
    }
    double a = (-1.0 - b) / m, c = (S - b) / m;
    if (a > c) std::swap(a, c);
    lo = std::max(lo, static_cast<int>(std::max(std::floor(a), -1e9)));
    hi = std::min(hi, static_cast<int>(std::min(std::ceil(c), 1e9)) + 1);
}

// out = clamp(rint(px + (w00·a + w01·b) + w10·c + w11·d)); rint is round-half-even like np.rint.
inline void blend_px(uint8_t* px, const float* a, const float* b, const float* c, const float* d,
                     float w00, float w01, float w10, float w11) {
#if defined(__SSE2__)
    __m128 acc = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(w00), _mm_loadu_ps(a)), _mm_mul_ps(_mm_set1_ps(w01), _mm_loadu_ps(b)));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w10), _mm_loadu_ps(c)));
    acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(w11), _mm_loadu_ps(d)));
    const __m128 v = _mm_add_ps(_mm_set_ps(0.0f, px[2], px[1], px[0]), acc);
    const __m128i i32 = _mm_cvtps_epi32(v);  // MXCSR default: round half to even
    const __m128i u8 = _mm_packus_epi16(_mm_packs_epi32(i32, i32), _mm_setzero_si128());  // saturate 0..255
    const uint32_t r = static_cast<uint32_t>(_mm_cvtsi128_si32(u8));
    px[0] = static_cast<uint8_t>(r), px[1] = static_cast<uint8_t>(r >> 8), px[2] = static_cast<uint8_t>(r >> 16);
#else
    for (int k = 0; k < 3; ++k) {
        const float acc = ((w00 * a[k] + w01 * b[k]) + w10 * c[k]) + w11 * d[k];
        const float v = std::nearbyint(static_cast<float>(px[k]) + acc);
        px[k] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, v)));
    }
#endif
}

void paste_rows(const Job& j, int ya, int yb) {
    const int S = j.crop->S;
    const size_t pitch = static_cast<size_t>(S + 2) * 4;
    const float* P = j.crop->p.data();
    const double m0 = j.m[0], m3 = j.m[3];
    for (int Y = ya; Y < yb; ++Y) {
        uint8_t* row = j.img + Y * j.row_stride;
        const double bx = j.m[1] * Y + j.m[2], by = j.m[4] * Y + j.m[5];
        int lo = j.x0, hi = j.x1;
        clip_span(m0, bx, S, lo, hi);
        clip_span(m3, by, S, lo, hi);
        for (int X = lo; X < hi; ++X) {
            const double sx = m0 * X + bx, sy = m3 * X + by;
            if (!(sx > -1.0 && sy > -1.0 && sx < S && sy < S)) continue;
            // s > -1, so truncation of s + 1 is floor(s) + 1: the padded index of the first tap.
            const int ix = static_cast<int>(sx + 1.0), iy = static_cast<int>(sy + 1.0);
            const float fx = static_cast<float>(sx + 1.0 - ix), fy = static_cast<float>(sy + 1.0 - iy);
            const float gx = 1.0f - fx, gy = 1.0f - fy;
            const float* p0 = P + iy * pitch + static_cast<size_t>(ix) * 4;
            const float* p1 = p0 + pitch;
            blend_px(row + static_cast<size_t>(X) * j.channels, p0, p0 + 4, p1, p1 + 4,
                     gy * gx, gy * fx, fy * gx, fy * fx);
        }
    }
}

void paste_warp_add(py::array out, py::array delta, py::object ramp_obj, py::array M, py::tuple roi, int threads) {
    if (out.dtype().kind() != 'u' || out.itemsize() != 1 || out.ndim() != 3 ||
        (out.shape(2) != 3 && out.shape(2) != 4) || !(out.flags() & py::array::c_style) || !out.writeable())
        throw std::invalid_argument("out must be a writable C-contiguous HxWx3 or HxWx4 uint8 array");
    if (delta.dtype().kind() != 'f' || delta.itemsize() != 4 || delta.ndim() != 3 || delta.shape(2) != 3 ||
        delta.shape(0) != delta.shape(1) || !(delta.flags() & py::array::c_style))
        throw std::invalid_argument("delta must be a C-contiguous (S, S, 3) float32 array");
    const int S = static_cast<int>(delta.shape(0));
    const float* ramp = nullptr;
    py::array ramp_arr;
    if (!ramp_obj.is_none()) {
        ramp_arr = py::reinterpret_borrow<py::array>(ramp_obj);
        if (ramp_arr.dtype().kind() != 'f' || ramp_arr.itemsize() != 4 || ramp_arr.ndim() != 1 ||
            ramp_arr.shape(0) != S || !(ramp_arr.flags() & py::array::c_style))
            throw std::invalid_argument("ramp must be a contiguous (S,) float32 array or None");
        ramp = static_cast<const float*>(ramp_arr.data());
    }
    if (M.dtype().kind() != 'f' || M.itemsize() != 8 || M.ndim() != 2 || M.shape(0) != 2 || M.shape(1) != 3 ||
        !(M.flags() & py::array::c_style))
        throw std::invalid_argument("M must be a C-contiguous (2, 3) float64 array");
    if (roi.size() != 4) throw std::invalid_argument("roi must be (x0, y0, x1, y1)");
    const int H = static_cast<int>(out.shape(0)), W = static_cast<int>(out.shape(1));
    const int x0 = roi[0].cast<int>(), y0 = roi[1].cast<int>(), x1 = roi[2].cast<int>(), y1 = roi[3].cast<int>();
    if (x0 < 0 || y0 < 0 || x1 > W || y1 > H || x0 > x1 || y0 > y1)
        throw std::invalid_argument("roi must lie inside the image with x0 <= x1, y0 <= y1");
    if (threads < 0) throw std::invalid_argument("threads must be >= 0 (0: all cores)");

    const int rows = y1 - y0;
    if (rows == 0 || x1 == x0) return;
    Job j{static_cast<uint8_t*>(out.mutable_data()), out.strides(0), static_cast<int>(out.shape(2)), nullptr, {}, x0, x1};
    const double* m = static_cast<const double*>(M.data());
    std::copy(m, m + 6, j.m);
    const float* dptr = static_cast<const float*>(delta.data());
    py::gil_scoped_release nogil;  // pure C++ from here: other Python threads (video decode) run
    const Crop crop(dptr, ramp, S);
    j.crop = &crop;

    int n = threads ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    n = std::max(1, std::min(n, rows / 32));  // ≥ 32 rows per thread, else the spawn costs more
    if (n == 1) {
        paste_rows(j, y0, y1);
        return;
    }
    std::vector<std::thread> pool;
    pool.reserve(n - 1);
    for (int t = 1; t < n; ++t)  // interleave-free contiguous bands: each thread owns its rows
        pool.emplace_back(paste_rows, std::cref(j), y0 + rows * t / n, y0 + rows * (t + 1) / n);
    paste_rows(j, y0, y0 + rows / n);
    for (auto& th : pool) th.join();
}

}  // namespace

PYBIND11_MODULE(_paste, mod) {
    mod.doc() = "Fused bilinear warp + feather + add + round + clamp paste-back (nullswap_sdk.faces.paste).";
    mod.def("paste_warp_add", &paste_warp_add, py::arg("out"), py::arg("delta"), py::arg("ramp"), py::arg("M"),
            py::arg("roi"), py::arg("threads") = 0,
            "In place: out[y0:y1, x0:x1, :3] = clip(rint(out + bilinear(delta·mask)(M·[x, y, 1])), 0, 255).\n"
            "M maps image pixels to crop pixels; ramp (S,) gives mask[i, j] = min(ramp[i], ramp[j]), None for none.");
}

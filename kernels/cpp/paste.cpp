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

namespace py = pybind11;

namespace {

struct Job {
    uint8_t* img;
    py::ssize_t row_stride;  // bytes
    int channels;            // 3 or 4 (alpha is never touched)
    const float* delta;      // (S, S, 3)
    const float* ramp;       // (S,) feather ramp, mask[i, j] = min(ramp[i], ramp[j]); null: no mask
    int S;
    double m[6];             // image pixel → crop pixel
    int x0, x1;
};

inline float mask_at(const float* ramp, int y, int x) { return ramp ? std::min(ramp[y], ramp[x]) : 1.0f; }

void paste_rows(const Job& j, int ya, int yb) {
    const int S = j.S;
    for (int Y = ya; Y < yb; ++Y) {
        uint8_t* row = j.img + Y * j.row_stride;
        const double bx = j.m[1] * Y + j.m[2], by = j.m[4] * Y + j.m[5];
        for (int X = j.x0; X < j.x1; ++X) {
            const double sx = j.m[0] * X + bx, sy = j.m[3] * X + by;
            // A sample contributes only if one of its four taps lies inside the crop.
            if (!(sx > -1.0 && sy > -1.0 && sx < S && sy < S)) continue;
            const double flx = std::floor(sx), fly = std::floor(sy);
            const int ix = static_cast<int>(flx), iy = static_cast<int>(fly);
            const float fx = static_cast<float>(sx - flx), fy = static_cast<float>(sy - fly);
            float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f;
            for (int dy = 0; dy < 2; ++dy) {
                const int yy = iy + dy;
                if (yy < 0 || yy >= S) continue;
                const float wy = dy ? fy : 1.0f - fy;
                for (int dx = 0; dx < 2; ++dx) {
                    const int xx = ix + dx;
                    if (xx < 0 || xx >= S) continue;
                    const float w = wy * (dx ? fx : 1.0f - fx);
                    const float mk = mask_at(j.ramp, yy, xx);
                    const float* d = j.delta + (static_cast<size_t>(yy) * S + xx) * 3;
                    // (delta · mask) first, as the reference premultiplies the crop.
                    acc0 += w * (d[0] * mk);
                    acc1 += w * (d[1] * mk);
                    acc2 += w * (d[2] * mk);
                }
            }
            uint8_t* px = row + static_cast<size_t>(X) * j.channels;
            const float acc[3] = {acc0, acc1, acc2};
            for (int c = 0; c < 3; ++c) {
                // float32 sum then round-half-even, as np.rint on the float32 reference.
                float v = std::nearbyint(static_cast<float>(px[c]) + acc[c]);
                px[c] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, v)));
            }
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

    Job j{static_cast<uint8_t*>(out.mutable_data()), out.strides(0), static_cast<int>(out.shape(2)),
          static_cast<const float*>(delta.data()), ramp, S, {}, x0, x1};
    const double* m = static_cast<const double*>(M.data());
    std::copy(m, m + 6, j.m);

    const int rows = y1 - y0;
    if (rows == 0 || x1 == x0) return;
    int n = threads ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    n = std::max(1, std::min(n, rows / 32));  // ≥ 32 rows per thread, else the spawn costs more
    py::gil_scoped_release nogil;
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

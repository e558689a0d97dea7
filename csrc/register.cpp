// The one registration file: op schemas (pamnet_fast/ops/library.py holds the same strings) and their
// CPU implementations. Fake kernels and autograd formulas are registered from Python.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

// Importing pamnet_fast._C runs the static registrations below; the module itself is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(pamnet_fast, m) {
  m.def("radius_graph(Tensor pos, float r, Tensor? batch, bool loop, int max_num_neighbors, "
        "bool truncate, bool check_values=True) -> (Tensor, Tensor)");
  m.def("knn_graph(Tensor pos, int k, Tensor? batch, float? r, bool loop) -> (Tensor, Tensor)");
  m.def("triplets(Tensor edge_index, int num_nodes, bool include_self_pairs, bool check_values=True, "
        "int[]? sizes=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("segment_gather_mul(Tensor a, Tensor src, Tensor b, Tensor ptr, bool check_values=True, "
        "Tensor? src_transpose=None) -> Tensor");
  m.def("segment_gather_mul_backward(Tensor grad_out, Tensor a, Tensor src, Tensor b, Tensor ptr, "
        "bool need_a, bool need_b, Tensor? src_transpose=None) -> (Tensor, Tensor)");
  m.def("fused_edge_message(Tensor p, Tensor q, Tensor r, Tensor s, Tensor ptr, Tensor src, "
        "Tensor? edge_row=None, bool check_values=True, Tensor? src_transpose=None, "
        "Tensor? row_transpose=None) -> Tensor");
  m.def("fused_edge_message_backward(Tensor grad_out, Tensor p, Tensor q, Tensor r, Tensor s, "
        "Tensor ptr, Tensor src, Tensor? edge_row, bool[4] output_mask, Tensor? src_transpose=None, "
        "Tensor? row_transpose=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("edge_message(Tensor p, Tensor q, Tensor r, Tensor s, Tensor ptr, Tensor src, "
        "Tensor? edge_row=None, bool check_values=True, Tensor? src_transpose=None, "
        "Tensor? row_transpose=None) -> Tensor");
  m.def("edge_message_backward(Tensor grad_out, Tensor p, Tensor q, Tensor r, Tensor s, "
        "Tensor ptr, Tensor src, Tensor? edge_row, bool[4] output_mask, Tensor? src_transpose=None, "
        "Tensor? row_transpose=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("bessel_basis(Tensor dist, Tensor freq, float cutoff, int envelope_exponent, "
        "bool check_values=True) -> Tensor");
  m.def("bessel_basis_backward(Tensor grad_out, Tensor dist, Tensor freq, float cutoff, "
        "int envelope_exponent, bool need_dist, bool need_freq) -> (Tensor, Tensor)");
  m.def("spherical_basis(Tensor dist, Tensor angle, Tensor zeros, float cutoff, int envelope_exponent, "
        "bool check_values=True) -> Tensor");
  m.def("spherical_basis_backward(Tensor grad_out, Tensor dist, Tensor angle, Tensor zeros, "
        "float cutoff, int envelope_exponent, bool need_dist, bool need_angle) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pamnet_fast, CPU, m) {
  m.impl("radius_graph", &pamnet_fast::radius_graph);
  m.impl("knn_graph", &pamnet_fast::knn_graph);
  m.impl("triplets", &pamnet_fast::triplets);
  m.impl("segment_gather_mul", &pamnet_fast::segment_gather_mul);
  m.impl("segment_gather_mul_backward", &pamnet_fast::segment_gather_mul_backward);
  m.impl("fused_edge_message", &pamnet_fast::fused_edge_message);
  m.impl("fused_edge_message_backward", &pamnet_fast::fused_edge_message_backward);
  m.impl("edge_message", &pamnet_fast::edge_message);
  m.impl("edge_message_backward", &pamnet_fast::edge_message_backward);
  m.impl("bessel_basis", &pamnet_fast::bessel_basis);
  m.impl("bessel_basis_backward", &pamnet_fast::bessel_basis_backward);
  m.impl("spherical_basis", &pamnet_fast::spherical_basis);
  m.impl("spherical_basis_backward", &pamnet_fast::spherical_basis_backward);
}

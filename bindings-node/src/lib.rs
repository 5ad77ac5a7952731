//! Node bindings for `remote-access-core`: a skeleton until the bindings issue fills it.
//! Nothing is exposed yet; see README.md.

/** The compiled Rust core (napi-rs), loaded by the generated ESM loader at the package root. */
export * from '../index.js'

// The WIT interfaces are the component's imports, not files: keep them out of the bundle.
export default { external: [/^conveyor:/, /^wasi:/] };

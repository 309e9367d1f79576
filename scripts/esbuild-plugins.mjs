/** esbuild plugins of scripts/build.mjs that keep what a start does not need out of it. */

/**
 * Packages (`names`) imported by a module are require()d when that module is first initialised, through
 * a one-line CommonJS module, rather than imported at the top of a bundle without chunks (build.mjs, LAZY).
 */
export function lazyRequires(names, root) {
  const filter = new RegExp(`^(${names.map((name) => name.replace(/[/.-]/g, (c) => `\\${c}`)).join('|')})$`);
  return {
    name: 'lazy-requires',
    setup(b) {
      b.onResolve({ filter }, (args) => (args.kind === 'require-call' ? { path: args.path, external: true } : { path: args.path, namespace: 'lazy-require' }));
      b.onLoad({ filter: /.*/, namespace: 'lazy-require' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js', resolveDir: root }));
    },
  };
}

/**
 * A CommonJS require() of one of Node's modules `names` gets a stand-in that requires the real module
 * at the first property read (build.mjs, LAZY_BUILTINS). ESM imports are left as they are.
 */
export function lazyBuiltins(names) {
  const filter = new RegExp(`^(node:)?(${names.join('|')})$`);
  return {
    name: 'lazy-builtins',
    setup(b) {
      b.onResolve({ filter }, (args) => (args.kind === 'require-call' && args.namespace === 'file'
        ? { path: args.path.replace(/^node:/, ''), namespace: 'lazy-builtin' }
        : { path: args.path, external: true }));
      b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
        contents: `let real;
const load = () => (real ??= require(${JSON.stringify(`node:${args.path}`)}));
module.exports = new Proxy({}, {
  get: (_, key) => load()[key],
  has: (_, key) => key in load(),
  ownKeys: () => Reflect.ownKeys(load()),
  getOwnPropertyDescriptor: (_, key) => {
    const descriptor = Reflect.getOwnPropertyDescriptor(load(), key);
    return descriptor && { ...descriptor, configurable: true };
  },
});`,
        loader: 'js',
      }));
    },
  };
}

/**
 * Node's modules `names`, imported by ESM code, are require()d instead. On Node 24 an ESM import of
 * node:http builds the module's ESM facade by reading every export, and http.WebSocket, CloseEvent and
 * MessageEvent are getters that load undici (fetch) and with it tls, http2 and zlib; a require() reads
 * only the exports the code uses.
 */
export function builtinsRequired(names) {
  const filter = new RegExp(`^(node:)?(${names.join('|')})$`);
  return {
    name: 'builtins-required',
    setup(b) {
      b.onResolve({ filter }, (args) => (args.kind === 'import-statement' && args.namespace === 'file'
        ? { path: args.path.replace(/^node:/, ''), namespace: 'builtin-required' }
        : undefined));
      b.onLoad({ filter: /.*/, namespace: 'builtin-required' }, (args) => ({
        contents: `module.exports = require(${JSON.stringify(`node:${args.path}`)});`,
        loader: 'js',
      }));
    },
  };
}

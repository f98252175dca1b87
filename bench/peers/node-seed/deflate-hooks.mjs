// Module resolution hook for deflate.mjs: the `ws` that server.js imports becomes ws-deflate.mjs; every other
// import (ws-deflate.mjs's own `ws` included) resolves as usual.
export async function resolve(specifier, context, nextResolve) {
  if (specifier === 'ws' && context.parentURL?.endsWith('/server.js')) {
    return { url: new URL('./ws-deflate.mjs', import.meta.url).href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}

/** The server's public surface. */
export { startServer, type KilnServer, type ServerOptions } from './server.js';
export { ensureTokens, type Tokens } from './tokens.js';

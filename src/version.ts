/** Kiln's own version, reported by workers and the server. */
export const KILN_VERSION = '0.1.0';

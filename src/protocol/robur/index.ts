/** robur builder's formats (its TCP protocol, builder-web's exec blob, the state file): values and codec. */
export * from './types.js';

/** Every command of `kiln`, in the order `kiln --help` lists them. */
import { registerArtifactCommands } from './commands/artifacts.js';
import { registerDaemonCommands } from './commands/daemons.js';
import { registerImportRoburCommand } from './commands/import-robur.js';
import { registerInfoCommands } from './commands/info.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerMigrateStoreCommand } from './commands/migrate-store.js';
import { registerRunCommands } from './commands/runs.js';
import { registerRoburExecCommands } from './commands/robur-exec.js';
import { registerWorkerCommand } from './commands/worker.js';
import { registerTokenCommands } from './commands/tokens.js';
import { registerWorkerTokenCommands } from './commands/worker-tokens.js';
import type { RegisterCommands } from './program.js';

export const ALL_COMMANDS: readonly RegisterCommands[] = [
  registerJobCommands, registerRunCommands, registerInfoCommands, registerArtifactCommands, registerDaemonCommands, registerWorkerCommand, registerTokenCommands, registerWorkerTokenCommands, registerMigrateStoreCommand,
  registerImportRoburCommand, registerRoburExecCommands,
];

/** `kiln worker-token create|list|revoke`: per-worker tokens, each bound to one worker name. */
import type { Command } from 'commander';
import { clientFor, globals } from '../context.js';
import { orDash, printJson, printTable } from '../output.js';

interface PresentedWorkerToken {
  name: string;
  createdAt: string;
  lastUsedAt: string | null;
}

/** Registers worker-token and its subcommands. */
export function registerWorkerTokenCommands(program: Command): void {
  const group = program
    .command('worker-token')
    .description("per-worker tokens: a worker started with one must use the token's name, and can touch only its own runs");

  group
    .command('create')
    .description('create a token for worker NAME and print it once, alone on stdout (it is stored only as a hash)')
    .argument('<name>', 'the worker name the token is bound to')
    .action(async (name: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<PresentedWorkerToken & { token: string }>('POST', '/api/worker-tokens', { name });
      if (globals(command).json) return printJson(reply);
      // The token alone on stdout, so `kiln worker-token create w1 > w1.token` keeps just it.
      process.stdout.write(`${reply.token}\n`);
      process.stderr.write(`kiln: token for worker '${reply.name}' created; it is shown only now. Start the worker with: KILN_WORKER_TOKEN_FD=3 kiln worker --name ${reply.name} 3< FILE\n`);
    });

  group
    .command('list')
    .description('the per-worker tokens: names, when created, when last used (never the tokens)')
    .action(async (_flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ tokens: PresentedWorkerToken[] }>('GET', '/api/worker-tokens');
      if (globals(command).json) return printJson(reply);
      printTable(['NAME', 'CREATED', 'LAST USED'], reply.tokens.map((t) => [t.name, t.createdAt, orDash(t.lastUsedAt)]));
    });

  group
    .command('revoke')
    .description("revoke worker NAME's token: it is refused from now on and a worker connected with it is disconnected")
    .argument('<name>')
    .action(async (name: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ name: string; disconnected: number }>('DELETE', `/api/worker-tokens/${encodeURIComponent(name)}`);
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`revoked the token of worker ${reply.name}${reply.disconnected ? ` (disconnected ${reply.disconnected} connection)` : ''}\n`);
    });
}

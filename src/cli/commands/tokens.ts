/** `kiln token create|list|revoke`: tokens for people, each with a role (viewer, operator, admin). */
import { Command, Option } from 'commander';
import { MAX_DURATION_MS, ROLES } from '../../core/index.js';
import type { PresentedToken } from '../api-client.js';
import { clientFor, globals } from '../context.js';
import { durationFlag } from '../flags.js';
import { orDash, printJson, printTable } from '../output.js';

/** Registers token and its subcommands. */
export function registerTokenCommands(program: Command): void {
  const group = program
    .command('token')
    .description('tokens for people: viewer reads (no secrets), operator also executes, cancels, pauses; admin does everything');

  group
    .command('create')
    .description('create a token NAME with a role and print it once, alone on stdout (it is stored only as a hash)')
    .argument('<name>', 'who or what the token is for (letters, digits, . _ - @)')
    .addOption(new Option('--role <role>', 'what the token may do').choices(ROLES).makeOptionMandatory())
    .option('--expires <duration>', 'refused after this long, e.g. 30d, 12h (default: never)')
    .action(async (name: string, flags: { role: string; expires?: string }, command: Command) => {
      const expiresInMs = flags.expires === undefined ? undefined : durationFlag('--expires', flags.expires, false, MAX_DURATION_MS);
      const reply = await clientFor(command).request<PresentedToken & { token: string }>('POST', '/api/tokens', { name, role: flags.role, expiresInMs });
      if (globals(command).json) return printJson(reply);
      // The token alone on stdout, so `kiln token create alice --role viewer > alice.token` keeps just it.
      process.stdout.write(`${reply.token}\n`);
      process.stderr.write(`kiln: ${reply.role} token '${reply.name}' created${reply.expiresAt ? `, expires ${reply.expiresAt}` : ''}; it is shown only now. Use it with --token or KILN_TOKEN, or sign in to the dashboard with it.\n`);
    });

  group
    .command('list')
    .description('the tokens: name, role, when created, when they expire, when last used (never the tokens)')
    .action(async (_flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ tokens: PresentedToken[] }>('GET', '/api/tokens');
      if (globals(command).json) return printJson(reply);
      printTable(['NAME', 'ROLE', 'CREATED', 'EXPIRES', 'LAST USED'], reply.tokens.map((t) => [
        t.name, t.role, orDash(t.createdAt), t.expiresAt === null ? 'never' : `${t.expiresAt}${t.expired ? ' (expired)' : ''}`, orDash(t.lastUsedAt),
      ]));
    });

  group
    .command('revoke')
    .description("revoke token NAME: it is refused from now on and its dashboard sessions end")
    .argument('<name>')
    .action(async (name: string, _flags: unknown, command: Command) => {
      const reply = await clientFor(command).request<{ name: string; sessions: number }>('DELETE', `/api/tokens/${encodeURIComponent(name)}`);
      if (globals(command).json) return printJson(reply);
      process.stdout.write(`revoked the token ${reply.name}${reply.sessions ? ` (ended ${reply.sessions} session${reply.sessions === 1 ? '' : 's'})` : ''}\n`);
    });
}

const c0 = process.cpuUsage();
for (const m of process.argv.slice(2)) await import(m.startsWith('.') ? new URL(m, 'file://' + process.cwd() + '/').href : m);
const c = process.cpuUsage(c0);
process.stdout.write(`${((c.user + c.system) / 1000).toFixed(0)} `);

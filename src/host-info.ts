/** Facts about the machine a worker or server runs on. */
import { readFileSync } from 'node:fs';
import os from 'node:os';

/**
 * The platform name of this host, as robur names them: `<distro>-<major version>` from
 * /etc/os-release (e.g. `debian-12`), or the OS name where that file says nothing useful.
 */
export function hostPlatform(): string {
  try {
    const release = readFileSync('/etc/os-release', 'utf8');
    const field = (key: string) => new RegExp(`^${key}="?([^"\\n]*)"?$`, 'm').exec(release)?.[1];
    const id = field('ID');
    const version = field('VERSION_ID')?.split('.')[0];
    if (id && version) return `${id}-${version}`;
    if (id) return id;
  } catch {
    // No /etc/os-release (e.g. FreeBSD, macOS): fall through to the kernel's name.
  }
  return `${os.platform()}-${os.release().split('.')[0]}`;
}

/** Hostname, OS and architecture, as a worker reports them in its hello. */
export function hostFacts(): { hostname: string; os: string; arch: string } {
  return { hostname: os.hostname(), os: `${os.type()} ${os.release()}`, arch: os.arch() };
}

/**
 * Finding font files named in configs and options. The reference `config_en.json` names its font bare
 * (`"font-path": "DejaVuSans.ttf"`), which only works from the directory that holds the font; here a relative
 * name is looked up where a user would expect it, and a miss names every place searched.
 */
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { homedir } from 'node:os'
import { basename, isAbsolute, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { VtcError } from './errors.js'

/** The fonts shipped in the package (`fonts/`). */
export const BUNDLED_FONT_DIR = fileURLToPath(new URL('../fonts/', import.meta.url))

/** The system's font directories, searched recursively (read at each call, so XDG variables apply). */
export function systemFontDirs(): string[] {
  const home = homedir()
  if (process.platform === 'win32') {
    const local = process.env.LOCALAPPDATA ?? join(home, 'AppData', 'Local')
    return [join(process.env.WINDIR ?? 'C:\\Windows', 'Fonts'), join(local, 'Microsoft', 'Windows', 'Fonts')]
  }
  if (process.platform === 'darwin') return [join(home, 'Library/Fonts'), '/Library/Fonts', '/System/Library/Fonts']
  const dataHome = process.env.XDG_DATA_HOME || join(home, '.local/share')
  const dataDirs = (process.env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':').filter(Boolean)
  return [join(dataHome, 'fonts'), join(home, '.fonts'), ...dataDirs.map((d) => join(d, 'fonts'))]
}

/**
 * The file a font name stands for: an absolute path as given; a relative one against each of `baseDirs` in
 * order; a bare file name then in the bundled fonts and the system's font directories (case-insensitively,
 * as font file names vary in case). `what` names the setting in the error.
 */
export async function findFont(name: string, baseDirs: string[], what: string): Promise<string> {
  if (isAbsolute(name)) return name
  const searched: string[] = []
  for (const dir of new Set(baseDirs)) {
    const path = resolve(dir, name)
    if (existsSync(path)) return path
    searched.push(dir)
  }
  if (basename(name) === name) {
    const bundled = join(BUNDLED_FONT_DIR, name)
    if (existsSync(bundled)) return bundled
    searched.push(BUNDLED_FONT_DIR)
    for (const dir of systemFontDirs()) {
      const found = await findInTree(dir, name.toLowerCase())
      if (found) return found
      searched.push(dir)
    }
  }
  throw new VtcError('ERR_VTC_FONT', `${what} "${name}": no such font file; searched ${searched.join(', ')}`)
}

async function findInTree(dir: string, lowerName: string): Promise<string | undefined> {
  let entries: string[]
  try {
    entries = await readdir(dir, { recursive: true })
  } catch {
    return undefined // a font directory this system does not have
  }
  const hit = entries.sort().find((e) => basename(e).toLowerCase() === lowerName)
  return hit === undefined ? undefined : join(dir, hit)
}

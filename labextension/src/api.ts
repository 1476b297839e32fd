// The server extension's REST API (nbenv/server/handlers.py), under <base_url>nbenv/api/.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IEnvSummary {
  env_id: string;
  name: string | null;
  kind: string;
  path: string;
  python: string;
  kernel: string | null;
  kernels: string[];
  requirements: string[];
  packages: number;
  size: number;
  size_unique: number;
  created: number;
  last_used: number;
}

export interface IPackage {
  name: string;
  version: string;
}

export interface IEnvDetail extends Omit<IEnvSummary, 'packages'> {
  packages: IPackage[];
  indexes: string[];
  lock: string | null;
}

export interface IExport {
  env_id: string;
  format: string;
  filename: string;
  text: string;
}

export interface INotebookLock {
  path: string;
  lock_file: string;
  exists: boolean;
  envs: {
    key: string;
    declared: string;
    env_id: string;
    built: boolean;
    packages: IPackage[];
  }[];
}

export const EXPORT_FORMATS = [
  'requirements',
  'pylock',
  'environment-yml',
  'metaflow'
] as const;

/** An error the server explained (its JSON `message`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class NbenvAPI {
  constructor(private readonly settings: ServerConnection.ISettings) {}

  async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'nbenv', 'api', path);
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, init, this.settings);
    } catch (error) {
      throw new ServerConnection.NetworkError(error as TypeError);
    }
    const text = await response.text();
    let data: any = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        data?.message ?? `${response.status} ${response.statusText}`
      );
    }
    return data as T;
  }

  async envs(): Promise<IEnvSummary[]> {
    return (await this.request<{ envs: IEnvSummary[] }>('envs')).envs;
  }

  env(envId: string): Promise<IEnvDetail> {
    return this.request<IEnvDetail>(`envs/${encodeURIComponent(envId)}`);
  }

  remove(envId: string): Promise<{ removed: string; kernels: string[] }> {
    return this.request(`envs/${encodeURIComponent(envId)}`, {
      method: 'DELETE'
    });
  }

  ensureKernel(
    envId: string
  ): Promise<{ kernel: string; display_name: string }> {
    return this.request(`envs/${encodeURIComponent(envId)}/kernel`, {
      method: 'POST'
    });
  }

  export(envId: string, format: string): Promise<IExport> {
    const query = URLExt.objectToQueryString({ format });
    return this.request(`envs/${encodeURIComponent(envId)}/export${query}`);
  }

  notebook(path: string): Promise<INotebookLock> {
    return this.request(`notebook${URLExt.objectToQueryString({ path })}`);
  }

  gc(
    olderThanDays: number | null,
    dryRun: boolean
  ): Promise<{ envs: string[]; kernels: string[]; leftovers: string[] }> {
    return this.request('gc', {
      method: 'POST',
      body: JSON.stringify({ older_than_days: olderThanDays, dry_run: dryRun })
    });
  }
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(value >= 100 || unit === 0 ? 0 : 1)} ${units[unit]}`;
}

export function envLabel(env: { name: string | null; env_id: string }): string {
  return env.name || env.env_id.slice(0, 12);
}

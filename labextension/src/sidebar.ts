// The left sidebar "Environments": every env of the store, expandable to its packages,
// with remove / export / new notebook / use in this notebook.
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

import {
  EXPORT_FORMATS,
  IEnvDetail,
  IEnvSummary,
  NbenvAPI,
  envLabel,
  formatSize
} from './api';

export interface ISidebarOptions {
  app: JupyterFrontEnd;
  api: NbenvAPI;
  tracker: INotebookTracker;
  /** Kernelspecs and the env list changed here: refresh everything that shows them. */
  changed: () => Promise<void>;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export class EnvironmentsPanel extends Widget {
  private readonly options: ISidebarOptions;
  private readonly list: HTMLElement;
  private readonly status: HTMLElement;
  private readonly notebookBox: HTMLElement;
  private readonly expanded = new Set<string>();
  private envs: IEnvSummary[] = [];
  private generation = 0;

  constructor(options: ISidebarOptions) {
    super();
    this.options = options;
    this.id = 'nbenv-environments';
    this.addClass('nbenv-Sidebar');
    this.title.caption = 'nbenv environments';

    const header = el('div', 'nbenv-Sidebar-header');
    header.appendChild(el('h2', 'nbenv-Sidebar-title', 'Environments'));
    const refresh = el('button', 'jp-Button nbenv-Sidebar-refresh', 'Refresh');
    refresh.title = 'Read the environments again';
    refresh.onclick = () => void this.options.changed();
    const gc = el('button', 'jp-Button nbenv-Sidebar-gc', 'Clean up');
    gc.title = 'Remove orphaned kernels, killed builds and unnamed envs unused for 30 days';
    gc.onclick = () => void this.collect();
    header.append(refresh, gc);
    this.status = el('div', 'nbenv-Sidebar-status');
    this.notebookBox = el('div', 'nbenv-Notebook');
    this.list = el('ul', 'nbenv-EnvList');
    this.node.append(header, this.status, this.notebookBox, this.list);
    options.tracker.currentChanged.connect(() => void this.showNotebook());
  }

  /** The envs the active notebook's lock pins (its %%pypi / %pypi declarations). */
  private async showNotebook(): Promise<void> {
    const panel = this.options.tracker.currentWidget;
    if (!panel) {
      this.notebookBox.replaceChildren();
      return;
    }
    const path = this.options.app.serviceManager.contents.localPath(panel.context.path);
    let lock;
    try {
      lock = await this.options.api.notebook(path);
    } catch {
      this.notebookBox.replaceChildren(); // not saved yet, or outside the root
      return;
    }
    if (this.options.tracker.currentWidget !== panel) {
      return;
    }
    const title = el('div', 'nbenv-Notebook-title', `This notebook: ${panel.context.path.split('/').pop()}`);
    const entries = el('ul', 'nbenv-Notebook-envs');
    for (const entry of lock.envs) {
      const known = this.envs.find(env => env.env_id === entry.env_id);
      const li = el('li', 'nbenv-Notebook-env');
      li.dataset.envId = entry.env_id;
      li.title = `${entry.env_id}: ${entry.packages.length} packages, locked in ${lock.lock_file}`;
      li.append(
        el('span', 'nbenv-Notebook-declared', entry.declared),
        el(
          'span',
          'nbenv-Notebook-target',
          known ? envLabel(known) : `${entry.env_id.slice(0, 12)} (not built)`
        )
      );
      if (known) {
        li.onclick = () => {
          this.expanded.add(entry.env_id);
          void this.render().then(() =>
            this.list
              .querySelector(`[data-env-id="${entry.env_id}"]`)
              ?.scrollIntoView({ block: 'nearest' })
          );
        };
      }
      entries.appendChild(li);
    }
    if (!lock.envs.length) {
      entries.appendChild(el('li', 'nbenv-Notebook-none', 'declares no environment'));
    }
    this.notebookBox.replaceChildren(title, entries);
  }

  /** Read the env list from the server and show it. */
  async refresh(): Promise<void> {
    const generation = ++this.generation;
    try {
      const envs = await this.options.api.envs();
      if (generation !== this.generation) {
        return; // a newer refresh is under way
      }
      this.envs = envs;
      this.status.textContent = envs.length
        ? ''
        : 'No environments yet: run a %%pypi or %%conda cell, or `nbenv create`.';
      await Promise.all([this.render(), this.showNotebook()]);
    } catch (error) {
      this.status.textContent = `nbenv: ${(error as Error).message}`;
    }
  }

  private async render(): Promise<void> {
    const rows = await Promise.all(this.envs.map(env => this.row(env)));
    this.list.replaceChildren(...rows);
  }

  private async row(env: IEnvSummary): Promise<HTMLElement> {
    const item = el('li', 'nbenv-Env');
    item.dataset.envId = env.env_id;
    const summary = el('div', 'nbenv-Env-summary');
    summary.title = `${env.env_id}\n${env.path}`;
    const open = this.expanded.has(env.env_id);
    summary.append(
      el('span', 'nbenv-Env-caret', open ? '\u25BE' : '\u25B8'),
      el('span', 'nbenv-Env-name', envLabel(env)),
      el('span', `nbenv-Env-kind nbenv-kind-${env.kind}`, env.kind)
    );
    const facts = el(
      'div',
      'nbenv-Env-facts',
      `Python ${env.python} \u00B7 ${formatSize(env.size)} \u00B7 ${env.packages} packages`
    );
    summary.onclick = () => {
      if (this.expanded.has(env.env_id)) {
        this.expanded.delete(env.env_id);
      } else {
        this.expanded.add(env.env_id);
      }
      void this.render();
    };
    item.append(summary, facts);
    if (open) {
      item.appendChild(await this.details(env));
    }
    return item;
  }

  private async details(env: IEnvSummary): Promise<HTMLElement> {
    const box = el('div', 'nbenv-Env-details');
    const actions = el('div', 'nbenv-Env-actions');
    const button = (label: string, cls: string, run: () => Promise<void>) => {
      const node = el('button', `jp-Button nbenv-Env-${cls}`, label);
      node.onclick = async event => {
        event.stopPropagation();
        try {
          await run();
        } catch (error) {
          await showErrorMessage(`nbenv: ${label}`, error as Error);
        }
      };
      actions.appendChild(node);
    };
    button('New notebook', 'new', () => this.newNotebook(env));
    button('Use here', 'use', () => this.useInCurrent(env));
    button('Export', 'export', () => this.exportEnv(env));
    button('Remove', 'remove', () => this.remove(env));
    box.appendChild(actions);
    if (env.requirements.length) {
      box.appendChild(
        el('div', 'nbenv-Env-asked', `Asked: ${env.requirements.join(' ')}`)
      );
    }
    let detail: IEnvDetail;
    try {
      detail = await this.options.api.env(env.env_id);
    } catch (error) {
      box.appendChild(el('div', 'nbenv-Env-error', (error as Error).message));
      return box;
    }
    const packages = el('ul', 'nbenv-Packages');
    for (const pkg of detail.packages) {
      const li = el('li', 'nbenv-Package');
      li.append(
        el('span', 'nbenv-Package-name', pkg.name),
        el('span', 'nbenv-Package-version', pkg.version)
      );
      packages.appendChild(li);
    }
    box.appendChild(packages);
    return box;
  }

  /** The env's kernel name, registering its kernelspec first when it has none. */
  private async kernelOf(env: IEnvSummary): Promise<string> {
    if (env.kernels.length) {
      return env.kernels[0];
    }
    const made = await this.options.api.ensureKernel(env.env_id);
    await this.options.changed();
    return made.kernel;
  }

  private async newNotebook(env: IEnvSummary): Promise<void> {
    const kernelName = await this.kernelOf(env);
    await this.options.app.commands.execute('notebook:create-new', {
      kernelName
    });
  }

  private async useInCurrent(env: IEnvSummary): Promise<void> {
    const panel = this.options.tracker.currentWidget;
    if (!panel) {
      await showDialog({
        title: 'No notebook',
        body: 'Open a notebook first: this switches its kernel to the environment.',
        buttons: [Dialog.okButton()]
      });
      return;
    }
    const name = await this.kernelOf(env);
    await panel.sessionContext.changeKernel({ name });
  }

  private async exportEnv(env: IEnvSummary): Promise<void> {
    const body = new ExportBody(this.options.api, env.env_id);
    await body.load();
    const result = await showDialog({
      title: `Export ${envLabel(env)}`,
      body,
      buttons: [Dialog.cancelButton({ label: 'Close' }), Dialog.okButton({ label: 'Download' })]
    });
    if (result.button.accept && body.current) {
      const blob = new Blob([body.current.text], { type: 'text/plain' });
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = body.current.filename;
      document.body.appendChild(link);
      link.click();
      link.remove();
      URL.revokeObjectURL(link.href);
    }
  }

  private async remove(env: IEnvSummary): Promise<void> {
    const kernels = env.kernels.length ? ` and its kernel ${env.kernels.join(', ')}` : '';
    const answer = await showDialog({
      title: 'Remove environment',
      body: `Remove ${envLabel(env)} (${formatSize(env.size)})${kernels}? Notebooks locked to it can build it again.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (!answer.button.accept) {
      return;
    }
    await this.options.api.remove(env.env_id);
    this.expanded.delete(env.env_id);
    await this.options.changed();
  }

  private async collect(): Promise<void> {
    try {
      const plan = await this.options.api.gc(30, true);
      const total = plan.envs.length + plan.kernels.length + plan.leftovers.length;
      if (!total) {
        await showDialog({
          title: 'Clean up',
          body: 'Nothing to clean up.',
          buttons: [Dialog.okButton()]
        });
        return;
      }
      const answer = await showDialog({
        title: 'Clean up',
        body: `Remove ${plan.envs.length} unused environment(s), ${plan.kernels.length} orphaned kernel(s) and ${plan.leftovers.length} killed build(s)?`,
        buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Clean up' })]
      });
      if (answer.button.accept) {
        await this.options.api.gc(30, false);
        await this.options.changed();
      }
    } catch (error) {
      await showErrorMessage('nbenv: clean up', error as Error);
    }
  }
}

/** The export dialog's body: a format picker and the exported text. */
class ExportBody extends Widget {
  current: { text: string; filename: string } | null = null;
  private readonly select: HTMLSelectElement;
  private readonly pre: HTMLPreElement;

  constructor(
    private readonly api: NbenvAPI,
    private readonly envId: string
  ) {
    super();
    this.addClass('nbenv-Export');
    this.select = el('select', 'jp-mod-styled nbenv-Export-format');
    for (const format of EXPORT_FORMATS) {
      const option = el('option', '', format);
      option.value = format;
      this.select.appendChild(option);
    }
    this.select.onchange = () => void this.load();
    this.pre = el('pre', 'nbenv-Export-text');
    this.node.append(this.select, this.pre);
  }

  async load(): Promise<void> {
    try {
      const exported = await this.api.export(this.envId, this.select.value);
      this.current = exported;
      this.pre.textContent = exported.text;
    } catch (error) {
      this.current = null;
      this.pre.textContent = (error as Error).message;
    }
  }
}

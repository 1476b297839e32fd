// The status bar item: the env of the active notebook's kernel, or "nbenv: none".
import { KernelSpec } from '@jupyterlab/services';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Widget } from '@lumino/widgets';

/** metadata.nbenv of an nbenv kernelspec (nbenv/kernels.py). */
export interface IKernelEnv {
  env_id: string;
  name: string | null;
  python_version: string;
  requirements: string[];
}

export function kernelEnv(
  specs: KernelSpec.ISpecModels | null,
  kernelName: string | undefined
): IKernelEnv | null {
  const spec = kernelName ? specs?.kernelspecs[kernelName] : undefined;
  const env = (spec?.metadata as any)?.nbenv;
  return env && typeof env.env_id === 'string' ? (env as IKernelEnv) : null;
}

export class EnvStatus extends Widget {
  private panel: NotebookPanel | null = null;

  constructor(
    private readonly tracker: INotebookTracker,
    private readonly kernelspecs: KernelSpec.IManager,
    onClick: () => void
  ) {
    super();
    this.addClass('nbenv-Status');
    this.node.onclick = onClick;
    tracker.currentChanged.connect(this.follow, this);
    kernelspecs.specsChanged.connect(this.update, this);
    this.follow();
  }

  private follow(): void {
    if (this.panel) {
      this.panel.sessionContext.kernelChanged.disconnect(this.update, this);
      this.panel.sessionContext.sessionChanged.disconnect(this.update, this);
    }
    this.panel = this.tracker.currentWidget;
    if (this.panel) {
      this.panel.sessionContext.kernelChanged.connect(this.update, this);
      this.panel.sessionContext.sessionChanged.connect(this.update, this);
    }
    this.update();
  }

  update(): void {
    const kernel = this.panel?.sessionContext.session?.kernel;
    const env = kernelEnv(this.kernelspecs.specs, kernel?.name);
    if (env) {
      this.node.textContent = `nbenv: ${env.name || env.env_id.slice(0, 12)}`;
      this.node.title = `This notebook runs in nbenv env ${env.env_id} (Python ${env.python_version}): ${env.requirements.join(' ') || 'from a lock'}`;
    } else {
      this.node.textContent = 'nbenv: none';
      this.node.title = this.panel
        ? "This notebook's kernel is not an nbenv environment"
        : 'No notebook is active';
    }
    this.node.dataset.envId = env?.env_id ?? '';
  }
}

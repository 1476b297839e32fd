// nbenv in JupyterLab: the Environments sidebar, the status bar item, and the kernel picker
// refreshed as soon as a kernel reports that nbenv changed the envs (magics.py publishes an
// `update_display_data` with the mime type below and a display id no output has: every
// frontend ignores it, this extension listens for it on the kernels' iopub).
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ISessionContext } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { NbenvAPI } from './api';
import { EnvironmentsPanel } from './sidebar';
import { EnvStatus } from './status';

export const CHANGE_MIME = 'application/vnd.nbenv.change+json';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M12 2 3 6.5v11L12 22l9-4.5v-11L12 2zm0 2.2 6.6 3.3L12 10.8 5.4 7.5 12 4.2zM5 9.1l6 3v7.6l-6-3V9.1zm8 10.6v-7.6l6-3v7.6l-6 3z"/>' +
  '</svg>';

export const envIcon = new LabIcon({ name: 'nbenv:environments', svgstr: ICON_SVG });

/** Is this iopub message nbenv saying that envs or kernelspecs changed? */
export function isChange(msg: KernelMessage.IIOPubMessage): boolean {
  if (msg.header.msg_type !== 'update_display_data') {
    return false;
  }
  const data = (msg.content as KernelMessage.IUpdateDisplayDataMsg['content']).data;
  return !!data && CHANGE_MIME in data;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbenv:plugin',
  description: 'nbenv environments: sidebar, kernel picker refresh, status item',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null
  ) => {
    const api = new NbenvAPI(app.serviceManager.serverSettings);
    const kernelspecs = app.serviceManager.kernelspecs;

    let pending: Promise<void> | null = null;
    const changed = (): Promise<void> => {
      // Several reports in a burst (a cell that builds two envs) cost one refresh.
      if (!pending) {
        pending = (async () => {
          await new Promise(resolve => setTimeout(resolve, 100));
          pending = null;
          await Promise.all([kernelspecs.refreshSpecs(), panel.refresh()]);
        })();
      }
      return pending;
    };

    const panel = new EnvironmentsPanel({ app, api, tracker, changed });
    panel.title.icon = envIcon;
    app.shell.add(panel, 'left', { rank: 650 });
    void panel.refresh();
    // Envs made elsewhere (a terminal's `nbenv create`) show up with Lab's kernelspec poll.
    kernelspecs.specsChanged.connect(() => void panel.refresh());

    const watched = new WeakSet<Kernel.IKernelConnection>();
    const watch = (kernel: Kernel.IKernelConnection | null | undefined) => {
      if (!kernel || watched.has(kernel)) {
        return;
      }
      watched.add(kernel);
      kernel.iopubMessage.connect((_, msg) => {
        if (isChange(msg)) {
          void changed();
        }
      });
    };
    // Notebooks, and any other widget with a kernel (a console) once it is focused.
    const followed = new WeakSet<ISessionContext>();
    const follow = (widget: { sessionContext?: ISessionContext } | null) => {
      const context = widget?.sessionContext;
      if (!context || followed.has(context)) {
        return;
      }
      followed.add(context);
      context.kernelChanged.connect((_, args) => watch(args.newValue));
      void context.ready.then(() => watch(context.session?.kernel));
    };
    tracker.forEach(follow);
    tracker.widgetAdded.connect((_, notebook: NotebookPanel) => follow(notebook));
    app.shell.currentChanged?.connect((_, args) =>
      follow(args.newValue as { sessionContext?: ISessionContext } | null)
    );

    const command = 'nbenv:show-environments';
    app.commands.addCommand(command, {
      label: 'Show nbenv Environments',
      execute: () => {
        app.shell.activateById(panel.id);
        return changed();
      }
    });
    palette?.addItem({ command, category: 'nbenv' });

    if (statusBar) {
      const item = new EnvStatus(tracker, kernelspecs, () =>
        app.shell.activateById(panel.id)
      );
      statusBar.registerStatusItem('nbenv:status', {
        item,
        align: 'left',
        rank: 5,
        isActive: () => true
      });
    }
  }
};

export default plugin;

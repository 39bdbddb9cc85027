/*
 * Client side (sbatch, salloc, srun): refuse --isense-worker for anyone but the
 * service account, early and with a clear message. slurmstepd checks again by
 * the job's uid, so this check is a courtesy, not the wall.
 */
#include <pwd.h>
#include <unistd.h>

#include "isense.h"

int isense_client_option(int val, const char *optarg, int remote)
{
	uid_t me = getuid(), allowed;
	struct passwd *pw;

	(void) val;
	(void) optarg;
	isense_worker_requested = true;
	/* In slurmstepd an error here fails spank_init and drains the node:
	 * the per-task check decides instead. */
	if (remote)
		return 0;

	if (!isense_cfg.valid) {
		slurm_error("isense: --isense-worker is unavailable: the isense "
			    "plugin's plugstack arguments are invalid");
		return -1;
	}
	if (isense_service_uid(&isense_cfg, &allowed) < 0) {
		slurm_error("isense: --isense-worker refused: service account "
			    "'%s' is not a user on this host",
			    isense_cfg.service_account);
		return -1;
	}
	if (me != allowed) {
		pw = getpwuid(me);
		slurm_error("isense: --isense-worker is reserved for the service "
			    "account '%s' (you are '%s')",
			    isense_cfg.service_account,
			    pw ? pw->pw_name : "unknown");
		return -1;
	}
	return 0;
}

/* Tell prolog/epilog scripts that this is a worker job: SPANK_ISENSE_WORKER=1. */
int isense_client_post_opt(spank_t sp)
{
	spank_err_t err;

	if (!isense_worker_requested)
		return 0;
	err = spank_job_control_setenv(sp, "ISENSE_WORKER", "1", 1);
	if (err != ESPANK_SUCCESS)
		slurm_debug("isense: cannot set SPANK_ISENSE_WORKER: %s",
			    spank_strerror(err));
	return 0;
}
